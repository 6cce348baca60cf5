/*
 * DMAR fixture covering every remapping structure type and every device scope type
 * (Intel VT-d Architecture Specification chapter 8). Compile: iasl -p dmar-full dmar-full.asl
 *
 * Topology it describes (segment 0 unless noted):
 *   DRHD A 0xfed90000: GPU 00:02.0, root port 00:1c.0 and everything below it, a device two
 *                      bridges down (00:1c.4 -> 00.0 -> 03.1), IOAPIC 8, HPET 0, ACPI device 1.
 *   DRHD B 0xfed91000: INCLUDE_PCI_ALL for segment 0 (2^1 pages of registers), IOAPIC 9.
 *   DRHD C 0xfed92000: INCLUDE_PCI_ALL for segment 1.
 *   RMRR for the USB controller 00:14.0, ATSR for root port 00:1c.0, RHSA for unit A,
 *   ANDD naming ACPI device 1, SATC for the integrated accelerator 00:0b.0, SIDP for 00:0b.0.
 */
[0004]                          Signature : "DMAR"
[0004]                       Table Length : 00000000
[0001]                           Revision : 02
[0001]                           Checksum : 00
[0006]                             Oem ID : "FWTEST"
[0008]                       Oem Table ID : "DMARFULL"
[0004]                       Oem Revision : 00000002
[0004]                    Asl Compiler ID : "INTL"
[0004]              Asl Compiler Revision : 00000000

[0001]                 Host Address Width : 2F
[0001]                              Flags : 07
[0010]                           Reserved : 00 00 00 00 00 00 00 00 00 00

/* DRHD A: explicit scopes only */
[0002]                      Subtable Type : 0000
[0002]                             Length : 0044
[0001]                              Flags : 00
[0001]               Size (decoded below) : 00
                         Size (pages, log2) : 0
[0002]                 PCI Segment Number : 0000
[0008]              Register Base Address : 00000000FED90000

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 02,00

[0001]                  Device Scope Type : 02
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1C,00

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 0C
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1C,04
[0002]                           PCI Path : 00,00
[0002]                           PCI Path : 03,01

[0001]                  Device Scope Type : 03
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 08
[0001]                     PCI Bus Number : F0
[0002]                           PCI Path : 1F,00

[0001]                  Device Scope Type : 04
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1F,07

[0001]                  Device Scope Type : 05
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 01
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 15,00

/* DRHD B: segment 0 catch-all, listed after the explicit unit as the spec requires */
[0002]                      Subtable Type : 0000
[0002]                             Length : 0018
[0001]                              Flags : 01
[0001]               Size (decoded below) : 01
                         Size (pages, log2) : 1
[0002]                 PCI Segment Number : 0000
[0008]              Register Base Address : 00000000FED91000

[0001]                  Device Scope Type : 03
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 09
[0001]                     PCI Bus Number : F0
[0002]                           PCI Path : 1F,01

/* DRHD C: segment 1 catch-all, no scopes */
[0002]                      Subtable Type : 0000
[0002]                             Length : 0010
[0001]                              Flags : 01
[0001]               Size (decoded below) : 00
                         Size (pages, log2) : 0
[0002]                 PCI Segment Number : 0001
[0008]              Register Base Address : 00000000FED92000

/* RMRR: USB controller's legacy-emulation buffer */
[0002]                      Subtable Type : 0001
[0002]                             Length : 0020
[0002]                           Reserved : 0000
[0002]                 PCI Segment Number : 0000
[0008]                       Base Address : 000000007C000000
[0008]                End Address (limit) : 000000007C7FFFFF

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 14,00

/* ATSR: only root port 00:1c.0 supports ATS */
[0002]                      Subtable Type : 0002
[0002]                             Length : 0010
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0002]                 PCI Segment Number : 0000

[0001]                  Device Scope Type : 02
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1C,00

/* RHSA: unit A sits in proximity domain 1 */
[0002]                      Subtable Type : 0003
[0002]                             Length : 0014
[0004]                           Reserved : 00000000
[0008]                       Base Address : 00000000FED90000
[0004]                   Proximity Domain : 00000001

/* ANDD: ACPI device 1 is the I2C controller */
[0002]                      Subtable Type : 0004
[0002]                             Length : 0017
[0003]                           Reserved : 000000
[0001]                      Device Number : 01
[0000]                        Device Name : "\_SB.PCI0.I2C0"

/* SATC: integrated accelerator requires ATS */
[0002]                      Subtable Type : 0005
[0002]                             Length : 0010
[0001]                              Flags : 01
[0001]                           Reserved : 00
[0002]                 PCI Segment Number : 0000

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 0B,00

/* SIDP: properties of the same accelerator */
[0002]                      Subtable Type : 0006
[0002]                             Length : 0010
[0002]                           Reserved : 0000
[0002]                 PCI Segment Number : 0000

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 02
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 0B,00

/*
 * DMAR shaped like the one QEMU's q35 machine builds for
 *   -machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,device-iotlb=on,aw-bits=48
 * with a pcie-root-port at 00:03.0 and an e1000e at 00:02.0:
 * one DRHD at 0xfed90000 with INCLUDE_PCI_ALL clear and an explicit scope for every device on
 * bus 0 (QEMU lists each PCI device it finds; bridges as sub-hierarchy scopes), the I/O APIC
 * scope QEMU describes as APIC ID 0 at pseudo bus 0xff device 0 function 0, and an ATSR with
 * ALL_PORTS because device-iotlb is on. dmar-qemu-q35.dat is the table QEMU 10.0.2 builds for
 * that configuration (kernel boot option dump-acpi=DMAR); the compiled form of this file equals
 * it except for the creator fields and checksum iasl writes.
 * Compile: iasl -p dmar-qemu-q35 dmar-qemu-q35.asl
 */
[0004]                          Signature : "DMAR"
[0004]                       Table Length : 00000000
[0001]                           Revision : 01
[0001]                           Checksum : 00
[0006]                             Oem ID : "BOCHS "
[0008]                       Oem Table ID : "BXPC    "
[0004]                       Oem Revision : 00000001
[0004]                    Asl Compiler ID : "BXPC"
[0004]              Asl Compiler Revision : 00000001

[0001]                 Host Address Width : 2F
[0001]                              Flags : 01
[0010]                           Reserved : 00 00 00 00 00 00 00 00 00 00

[0002]                      Subtable Type : 0000
[0002]                             Length : 0050
[0001]                              Flags : 00
[0001]               Size (decoded below) : 00
                         Size (pages, log2) : 0
[0002]                 PCI Segment Number : 0000
[0008]              Register Base Address : 00000000FED90000

[0001]                  Device Scope Type : 03
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : FF
[0002]                           PCI Path : 00,00

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 00,00

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 01,00

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
[0002]                           PCI Path : 03,00

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1F,00

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1F,02

[0001]                  Device Scope Type : 01
[0001]                       Entry Length : 08
[0001]                              Flags : 00
[0001]                           Reserved : 00
[0001]                     Enumeration ID : 00
[0001]                     PCI Bus Number : 00
[0002]                           PCI Path : 1F,03

[0002]                      Subtable Type : 0002
[0002]                             Length : 0008
[0001]                              Flags : 01
[0001]                           Reserved : 00
[0002]                 PCI Segment Number : 0000

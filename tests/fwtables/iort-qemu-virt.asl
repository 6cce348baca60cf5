/*
 * The IORT QEMU 10.0.2 builds for -machine virt,iommu=smmuv3 (IORT issue E.b, table revision 3),
 * transcribed from the table itself: iort-qemu-virt.dat is its raw dump (kernel boot option
 * dump-acpi=IORT), and the compiled form of this file equals it except for the creator fields
 * and checksum iasl writes. One ITS group; the SMMUv3 at 0x09050000 with wired interrupts
 * (SPIs 74..77: event GSIV 0x6a, PRI 0x6b, sync 0x6c, GERR 0x6d - QEMU orders them so GERR
 * follows sync) whose stream IDs map 1:1 to ITS device IDs; and the PCIe root complex of segment
 * 0, whose bus 0 (RIDs 0..0xff) goes through the SMMUv3 and whose remaining RIDs
 * (0x100..0xffff, buses QEMU did not put behind the SMMU) go straight to the ITS.
 * Compile: iasl -p iort-qemu-virt iort-qemu-virt.asl
 *
 *   offset  node
 *   0x030   ITS group, ITS ID 0
 *   0x048   SMMUv3, stream IDs 0..0xffff -> ITS device IDs 0..0xffff
 *   0x0A0   root complex, RIDs 0..0xff -> SMMUv3 stream IDs 0..0xff,
 *                         RIDs 0x100..0xffff -> ITS device IDs 0x100..0xffff
 */
[0004]                          Signature : "IORT"
[0004]                       Table Length : 00000000
[0001]                           Revision : 03
[0001]                           Checksum : 00
[0006]                             Oem ID : "BOCHS "
[0008]                       Oem Table ID : "BXPC    "
[0004]                       Oem Revision : 00000001
[0004]                    Asl Compiler ID : "BXPC"
[0004]              Asl Compiler Revision : 00000001

[0004]                         Node Count : 00000003
[0004]                        Node Offset : 00000030
[0004]                           Reserved : 00000000

[0001]                               Type : 00
[0002]                             Length : 0018
[0001]                           Revision : 01
[0004]                         Identifier : 00000000
[0004]                      Mapping Count : 00000000
[0004]                     Mapping Offset : 00000000

[0004]                           ItsCount : 00000001
[0004]                        Identifiers : 00000000

[0001]                               Type : 04
[0002]                             Length : 0058
[0001]                           Revision : 04
[0004]                         Identifier : 00000001
[0004]                      Mapping Count : 00000001
[0004]                     Mapping Offset : 00000044

[0008]                       Base Address : 0000000009050000
[0004]              Flags (decoded below) : 00000001
                          COHACC Override : 1
                            HTTU Override : 0
                   Proximity Domain Valid : 0
                           DeviceID Valid : 0
[0004]                           Reserved : 00000000
[0008]                      VATOS Address : 0000000000000000
[0004]                              Model : 00000000
[0004]                         Event GSIV : 0000006A
[0004]                           PRI GSIV : 0000006B
[0004]                          GERR GSIV : 0000006D
[0004]                          Sync GSIV : 0000006C
[0004]                   Proximity Domain : 00000000
[0004]            Device ID Mapping Index : 00000000

[0004]                         Input base : 00000000
[0004]                           ID Count : 0000FFFF
[0004]                        Output Base : 00000000
[0004]                   Output Reference : 00000030
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

[0001]                               Type : 02
[0002]                             Length : 004C
[0001]                           Revision : 03
[0004]                         Identifier : 00000002
[0004]                      Mapping Count : 00000002
[0004]                     Mapping Offset : 00000024

[0008]                  Memory Properties : [IORT Memory Access Properties]
[0004]                    Cache Coherency : 00000001
[0001]              Hints (decoded below) : 00
                                Transient : 0
                           Write Allocate : 0
                            Read Allocate : 0
                                 Override : 0
[0002]                           Reserved : 0000
[0001]       Memory Flags (decoded below) : 03
                                Coherency : 1
                         Device Attribute : 1
            Ensured Coherency of Accesses : 0
[0004]                      ATS Attribute : 00000000
[0004]                 PCI Segment Number : 00000000
[0001]                  Memory Size Limit : 40
[0002]                 PASID Capabilities : 0000
[0001]                           Reserved : 00

[0004]                         Input base : 00000000
[0004]                           ID Count : 000000FF
[0004]                        Output Base : 00000000
[0004]                   Output Reference : 00000048
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

[0004]                         Input base : 00000100
[0004]                           ID Count : 0000FEFF
[0004]                        Output Base : 00000100
[0004]                   Output Reference : 00000030
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

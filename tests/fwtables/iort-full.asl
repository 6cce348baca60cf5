/*
 * IORT fixture (Arm DEN0049 issue E.d, table revision 5) covering every node type this
 * project decodes. Compile: iasl -p iort-full iort-full.asl
 *
 *   offset  node
 *   0x030   ITS group, ITS IDs 0 and 1
 *   0x04C   SMMUv3 at 0x2b400000: stream IDs 0..0xffff -> ITS device IDs 0x10000..; its own
 *           MSIs through single mapping 1 (DeviceID mapping index valid) -> ITS device ID 0x7000
 *   0x0B8   SMMUv2 (MMU-500) at 0x2b500000: global, 2 context and 1 PMU interrupts, no mappings
 *   0x11C   root complex, segment 0: RIDs 0..0x7fff -> SMMUv3 stream IDs 0..;
 *           RIDs 0x8000..0x80ff bypass the SMMU -> ITS device IDs 0x8000..
 *   0x168   named component \_SB.ETH0: single mapping -> SMMUv2 stream ID 0x20
 *   0x1A4   named component \_SB.DMA0: IDs 0..3 -> SMMUv3 stream IDs 0x20000..0x20003
 *   0x1E0   PMCG counting for the SMMUv3, overflow by MSI: single mapping -> ITS device ID 0x9000
 *   0x21C   RMR for SMMUv3 stream ID 0x100: two 64 KiB-aligned ranges, remapping permitted,
 *           Normal write-back memory (access attributes 5); descriptors precede the ID array,
 *           the order iasl's compiler expects
 */
[0004]                          Signature : "IORT"
[0004]                       Table Length : 00000000
[0001]                           Revision : 05
[0001]                           Checksum : 00
[0006]                             Oem ID : "FWTEST"
[0008]                       Oem Table ID : "IORTFULL"
[0004]                       Oem Revision : 00000005
[0004]                    Asl Compiler ID : "INTL"
[0004]              Asl Compiler Revision : 00000000

[0004]                         Node Count : 00000008
[0004]                        Node Offset : 00000030
[0004]                           Reserved : 00000000

/* 0x030 ITS group */
[0001]                               Type : 00
[0002]                             Length : 001C
[0001]                           Revision : 01
[0004]                         Identifier : 00000000
[0004]                      Mapping Count : 00000000
[0004]                     Mapping Offset : 00000000

[0004]                           ItsCount : 00000002
[0004]                        Identifiers : 00000000
[0004]                        Identifiers : 00000001

/* 0x04C SMMUv3 */
[0001]                               Type : 04
[0002]                             Length : 006C
[0001]                           Revision : 04
[0004]                         Identifier : 00000001
[0004]                      Mapping Count : 00000002
[0004]                     Mapping Offset : 00000044

[0008]                       Base Address : 000000002B400000
[0004]              Flags (decoded below) : 00000019
                          COHACC Override : 1
                            HTTU Override : 0
                   Proximity Domain Valid : 1
                           DeviceID Valid : 1
[0004]                           Reserved : 00000000
[0008]                      VATOS Address : 0000000000000000
[0004]                              Model : 00000000
[0004]                         Event GSIV : 00000000
[0004]                           PRI GSIV : 00000000
[0004]                          GERR GSIV : 00000000
[0004]                          Sync GSIV : 00000000
[0004]                   Proximity Domain : 00000001
[0004]            Device ID Mapping Index : 00000001

[0004]                         Input base : 00000000
[0004]                           ID Count : 0000FFFF
[0004]                        Output Base : 00010000
[0004]                   Output Reference : 00000030
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

[0004]                         Input base : 00000000
[0004]                           ID Count : 00000000
[0004]                        Output Base : 00007000
[0004]                   Output Reference : 00000030
[0004]              Flags (decoded below) : 00000001
                           Single Mapping : 1

/* 0x0B8 SMMUv2 */
[0001]                               Type : 03
[0002]                             Length : 0064
[0001]                           Revision : 03
[0004]                         Identifier : 00000002
[0004]                      Mapping Count : 00000000
[0004]                     Mapping Offset : 00000000

[0008]                       Base Address : 000000002B500000
[0008]                               Span : 0000000000010000
[0004]                              Model : 00000003
[0004]              Flags (decoded below) : 00000001
                            DVM Supported : 1
                            Coherent Walk : 0
[0004]            Global Interrupt Offset : 0000003C
[0004]            Context Interrupt Count : 00000002
[0004]           Context Interrupt Offset : 0000004C
[0004]                PMU Interrupt Count : 00000001
[0004]               PMU Interrupt Offset : 0000005C

[0004]                            NSgIrpt : 00000060
[0004]      NSgIrpt Flags (decoded below) : 00000001
                           Edge Triggered : 1
[0004]                         NSgCfgIrpt : 00000061
[0004]   NSgCfgIrpt Flags (decoded below) : 00000000
                           Edge Triggered : 0

[0008]                  Context Interrupt : 0000000000000062
[0008]                  Context Interrupt : 0000000100000063

[0008]                      PMU Interrupt : 0000000000000064

/* 0x11C root complex */
[0001]                               Type : 02
[0002]                             Length : 004C
[0001]                           Revision : 04
[0004]                         Identifier : 00000003
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
[0004]                      ATS Attribute : 00000001
[0004]                 PCI Segment Number : 00000000
[0001]                  Memory Size Limit : 30
[0002]                 PASID Capabilities : 0014
[0001]                           Reserved : 00

[0004]                         Input base : 00000000
[0004]                           ID Count : 00007FFF
[0004]                        Output Base : 00000000
[0004]                   Output Reference : 0000004C
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

[0004]                         Input base : 00008000
[0004]                           ID Count : 000000FF
[0004]                        Output Base : 00008000
[0004]                   Output Reference : 00000030
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

/* 0x168 named component \_SB.ETH0 */
[0001]                               Type : 01
[0002]                             Length : 003C
[0001]                           Revision : 04
[0004]                         Identifier : 00000004
[0004]                      Mapping Count : 00000001
[0004]                     Mapping Offset : 00000028

[0004]                         Node Flags : 00000000
[0008]                  Memory Properties : [IORT Memory Access Properties]
[0004]                    Cache Coherency : 00000001
[0001]              Hints (decoded below) : 00
                                Transient : 0
                           Write Allocate : 0
                            Read Allocate : 0
                                 Override : 0
[0002]                           Reserved : 0000
[0001]       Memory Flags (decoded below) : 00
                                Coherency : 0
                         Device Attribute : 0
            Ensured Coherency of Accesses : 0
[0001]                  Memory Size Limit : 28
[0009]                        Device Name : "\_SB.ETH0"
[0001]                            Padding : 00

[0004]                         Input base : 00000000
[0004]                           ID Count : 00000000
[0004]                        Output Base : 00000020
[0004]                   Output Reference : 000000B8
[0004]              Flags (decoded below) : 00000001
                           Single Mapping : 1

/* 0x1A4 named component \_SB.DMA0 */
[0001]                               Type : 01
[0002]                             Length : 003C
[0001]                           Revision : 04
[0004]                         Identifier : 00000005
[0004]                      Mapping Count : 00000001
[0004]                     Mapping Offset : 00000028

[0004]                         Node Flags : 00000000
[0008]                  Memory Properties : [IORT Memory Access Properties]
[0004]                    Cache Coherency : 00000000
[0001]              Hints (decoded below) : 00
                                Transient : 0
                           Write Allocate : 0
                            Read Allocate : 0
                                 Override : 0
[0002]                           Reserved : 0000
[0001]       Memory Flags (decoded below) : 00
                                Coherency : 0
                         Device Attribute : 0
            Ensured Coherency of Accesses : 0
[0001]                  Memory Size Limit : 20
[0009]                        Device Name : "\_SB.DMA0"
[0001]                            Padding : 00

[0004]                         Input base : 00000000
[0004]                           ID Count : 00000003
[0004]                        Output Base : 00020000
[0004]                   Output Reference : 0000004C
[0004]              Flags (decoded below) : 00000000
                           Single Mapping : 0

/* 0x1E0 PMCG */
[0001]                               Type : 05
[0002]                             Length : 003C
[0001]                           Revision : 02
[0004]                         Identifier : 00000006
[0004]                      Mapping Count : 00000001
[0004]                     Mapping Offset : 00000028

[0008]                Page 0 Base Address : 000000002B420000
[0004]            Overflow Interrupt GSIV : 00000000
[0004]                     Node Reference : 0000004C
[0008]                Page 1 Base Address : 000000002B430000

[0004]                         Input base : 00000000
[0004]                           ID Count : 00000000
[0004]                        Output Base : 00009000
[0004]                   Output Reference : 00000030
[0004]              Flags (decoded below) : 00000001
                           Single Mapping : 1

/* 0x21C RMR */
[0001]                               Type : 06
[0002]                             Length : 0058
[0001]                           Revision : 03
[0004]                         Identifier : 00000007
[0004]                      Mapping Count : 00000001
[0004]                     Mapping Offset : 00000044

[0004]              Flags (decoded below) : 00000015
                      Remapping Permitted : 1
                        Access Privileged : 0
                        Access Attributes : 05
[0004]          Number of RMR Descriptors : 00000002
[0004]              RMR Descriptor Offset : 0000001C

[0008]                Base Address of RMR : 0000000080000000
[0008]                      Length of RMR : 0000000000010000
[0004]                           Reserved : 00000000

[0008]                Base Address of RMR : 0000000080100000
[0008]                      Length of RMR : 0000000000020000
[0004]                           Reserved : 00000000

[0004]                         Input base : 00000000
[0004]                           ID Count : 00000000
[0004]                        Output Base : 00000100
[0004]                   Output Reference : 0000004C
[0004]              Flags (decoded below) : 00000001
                           Single Mapping : 1

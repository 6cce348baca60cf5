//! Configuration-space layout: register offsets and the bits this crate uses, with the
//! section of the specification each comes from.

/// Vendor ID [15:0], device ID [31:16] (PCI 3.0, 6.2.1). Vendor 0xFFFF: no function there.
pub const ID: u16 = 0x00;
pub const NO_VENDOR: u16 = 0xffff;

/// Command [15:0], status [31:16] (PCI 3.0, 6.2.2-6.2.3). The status half is
/// write-one-to-clear: writes put zeros there.
pub const COMMAND: u16 = 0x04;
pub mod command {
    /// Bit 0: respond to I/O space.
    pub const IO_SPACE: u32 = 1 << 0;
    /// Bit 1: respond to memory space (a bridge: forward memory downstream through its window).
    pub const MEMORY_SPACE: u32 = 1 << 1;
    /// Bit 2: bus master (a bridge: forward memory requests upstream, i.e. its children's DMA).
    pub const BUS_MASTER: u32 = 1 << 2;
}
/// Status bit 4 (bit 20 of the dword at COMMAND): the capabilities list is present.
pub const STATUS_CAPABILITIES_LIST: u32 = 1 << 20;

/// Revision [7:0], class code [31:8] (PCI 3.0, 6.2.1).
pub const CLASS: u16 = 0x08;

/// Header type, byte 2 of the dword at 0x0C (PCI 3.0, 6.2.1): bit 7 multi-function device,
/// bits 6:0 layout (0 a function, 1 a PCI-to-PCI bridge).
pub const HEADER_DWORD: u16 = 0x0c;
pub const HEADER_SHIFT: u32 = 16;
pub const HEADER_MULTIFUNCTION: u8 = 1 << 7;
pub const HEADER_LAYOUT: u8 = 0x7f;
pub const LAYOUT_BRIDGE: u8 = 1;

/// First base address register; a type 0 header has six, a type 1 header two.
pub const BAR0: u16 = 0x10;
pub const ENDPOINT_BARS: u8 = 6;
pub const BRIDGE_BARS: u8 = 2;
pub mod bar {
    /// Bit 0: I/O space BAR.
    pub const IO: u32 = 1 << 0;
    /// Bits 2:1 of a memory BAR: 0b10 is a 64-bit BAR (continues in the next register).
    pub const TYPE_SHIFT: u32 = 1;
    pub const TYPE_MASK: u32 = 0b11;
    pub const TYPE_64: u32 = 0b10;
    /// Bits 3:0 of a memory BAR are flags, not address.
    pub const FLAGS: u32 = 0xf;
}

/// Type 1 header: primary bus [7:0], secondary bus [15:8], subordinate bus [23:16],
/// secondary latency timer [31:24] (PCI-to-PCI Bridge 1.2, 3.2.5.2-3.2.5.4).
pub const BRIDGE_BUSES: u16 = 0x18;
/// Type 1 header: memory base [15:0] and memory limit [31:16]; in each, bits 15:4 hold
/// address bits 31:20 (the limit's low 20 bits read as ones) (PCI-to-PCI Bridge 1.2, 3.2.5.8).
pub const BRIDGE_MEMORY: u16 = 0x20;
/// Type 1 header: prefetchable memory base [15:0] and limit [31:16], same encoding, and
/// their upper 32 bits at 0x28 and 0x2C (3.2.5.9-3.2.5.10).
pub const BRIDGE_PREFETCHABLE: u16 = 0x24;
pub const BRIDGE_PREFETCHABLE_BASE_UPPER: u16 = 0x28;
pub const BRIDGE_PREFETCHABLE_LIMIT_UPPER: u16 = 0x2c;
/// A bridge window's granularity: 1 MiB.
pub const BRIDGE_WINDOW_ALIGN: u64 = 1 << 20;

/// Capabilities pointer, byte 0 of 0x34; bits 1:0 are reserved (PCI 3.0, 6.7).
pub const CAPABILITIES_POINTER: u16 = 0x34;
/// Each capability: ID [7:0], next pointer [15:8].
pub const CAP_ID_PCI_EXPRESS: u8 = 0x10;
/// PCI Express capabilities register, bits [31:16] of the capability's first dword; device/port
/// type in its bits 7:4 (PCI Express 4.0, 7.5.3.2).
pub const PCIE_PORT_TYPE_SHIFT: u32 = 16 + 4;
pub const PCIE_PORT_TYPE_MASK: u32 = 0xf;

/// Extended capabilities start at 0x100: ID [15:0], version [19:16], next [31:20]
/// (PCI Express 4.0, 7.6.3).
pub const EXTENDED_CAPABILITIES: u16 = 0x100;
pub const EXT_CAP_ID_ACS: u16 = 0x000d;
/// ACS capability register, bits [15:0] of the dword after the header (PCI Express 4.0, 7.7.7.2).
pub const ACS_CAPABILITY: u16 = 4;
pub mod acs {
    /// Bit 0: source validation.
    pub const SOURCE_VALIDATION: u16 = 1 << 0;
    /// Bit 2: P2P request redirect.
    pub const REQUEST_REDIRECT: u16 = 1 << 2;
    /// Bit 3: P2P completion redirect.
    pub const COMPLETION_REDIRECT: u16 = 1 << 3;
    /// Bit 4: upstream forwarding.
    pub const UPSTREAM_FORWARDING: u16 = 1 << 4;
    /// What a port must offer to keep the functions below it apart from its siblings': no
    /// request or completion goes peer to peer, none with a forged requester ID.
    pub const ISOLATING_PORT: u16 = SOURCE_VALIDATION | REQUEST_REDIRECT | COMPLETION_REDIRECT | UPSTREAM_FORWARDING;
    /// What a function of a multi-function device must offer to keep it apart from its
    /// siblings (there is no upstream port between them to forward through).
    pub const ISOLATING_FUNCTION: u16 = REQUEST_REDIRECT | COMPLETION_REDIRECT;
}

/// Device/port type of the PCI Express capability (PCI Express 4.0, 7.5.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortType {
    Endpoint,
    LegacyEndpoint,
    RootPort,
    SwitchUpstream,
    SwitchDownstream,
    /// PCI Express to PCI/PCI-X bridge: takes ownership of the transactions it forwards
    /// upstream.
    PcieToPciBridge,
    PciToPcieBridge,
    RootComplexIntegrated,
    RootComplexEventCollector,
    Reserved(u8),
}

impl PortType {
    pub fn from_field(value: u8) -> PortType {
        match value {
            0x0 => PortType::Endpoint,
            0x1 => PortType::LegacyEndpoint,
            0x4 => PortType::RootPort,
            0x5 => PortType::SwitchUpstream,
            0x6 => PortType::SwitchDownstream,
            0x7 => PortType::PcieToPciBridge,
            0x8 => PortType::PciToPcieBridge,
            0x9 => PortType::RootComplexIntegrated,
            0xa => PortType::RootComplexEventCollector,
            other => PortType::Reserved(other),
        }
    }

    /// A downstream-facing port: the functions below it reach their siblings' only through it.
    pub fn is_downstream_port(self) -> bool {
        matches!(self, PortType::RootPort | PortType::SwitchDownstream)
    }
}

//! Errors reported by the driver.

use crate::regs::CommandErrorCode;

/// What a timed-out wait was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTarget {
    /// SMMU_CR0ACK to reflect a write to SMMU_CR0.
    Cr0Ack,
    /// SMMU_IRQ_CTRLACK to reflect a write to SMMU_IRQ_CTRL.
    IrqCtrlAck,
    /// SMMU_GBPA.UPDATE to clear.
    GbpaUpdate,
    /// Space in the command queue (CMDQ_CONS to advance).
    CommandQueueSpace,
    /// CMDQ_CONS to pass a CMD_SYNC.
    CommandSync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmmuError {
    /// The hardware did not respond within the driver's timeout.
    Timeout(WaitTarget),
    /// The DMA allocator had no memory for a table or queue.
    OutOfMemory,
    /// The SMMU lacks something the driver or the request needs.
    Unsupported(&'static str),
    /// A configuration passed by the caller is not valid for this SMMU.
    InvalidConfig(&'static str),
    /// The StreamID is not covered by the stream table.
    StreamIdOutOfRange { sid: u32, limit: u32 },
    /// The SMMU rejected a command (CMDQ_ERR). The driver replaced the command by a CMD_SYNC and
    /// restarted the queue; the commands around it were executed.
    CommandRejected { opcode: u8, code: CommandErrorCode, index: u32 },
    /// The SMMU entered service failure mode (GERROR.SFM_ERR); only a reset recovers.
    ServiceFailure,
}

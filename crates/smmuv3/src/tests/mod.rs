//! Driver tests against the software model: the real driver code runs on `SmmuModel` registers
//! and memory, and device transactions are checked through `SmmuModel::translate`.

mod bring_up;
mod queues;
mod recoverable;
mod support;
mod strict_model;
mod translation;

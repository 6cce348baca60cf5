//! The `operations!` macro: from the operation table in `wire/mod.rs` it writes [`Opcode`],
//! [`Request`], their encoder and total decoder, and the server's [`Handler`] trait with
//! [`serve`], so that each operation is declared once.
//!
//! One entry of the table:
//!
//! ```text
//! /// doc
//! NUMBER Variant name [(capability what)] [{ field: Type = codec, ... }] -> ReplyShape;
//! ```
//!
//! A codec (see `args.rs`) names the words and flag bits its field occupies. Fields are read
//! (and so checked) in the order written; before them, the decoder refuses flag bits and
//! words that no field claims.
//!
//! [`Opcode`]: super::Opcode
//! [`Request`]: super::Request
//! [`Handler`]: super::Handler
//! [`serve`]: super::serve

/// The value a handler returns for a reply of this shape.
macro_rules! reply_payload {
    (Empty) => { () };
    (Handle) => { Handle };
    (Iova) => { u64 };
    (Length) => { u64 };
    (IovaRanges) => { (u32, RangeList) };
    (Pasid) => { u32 };
    (Faults) => { FaultBatch };
    (DirtyBitmap) => { [u64; DIRTY_BITMAP_WORDS] };
    (Info) => { DeviceInfo };
}

/// The [`Reply`](super::Reply) of this shape holding `value`.
macro_rules! reply_of {
    (Empty, $value:expr) => {{
        let () = $value;
        Reply::Empty
    }};
    (IovaRanges, $value:expr) => {{
        let (total, ranges) = $value;
        Reply::IovaRanges { total, ranges }
    }};
    ($shape:ident, $value:expr) => {
        Reply::$shape($value)
    };
}

/// The success reply's message, or the error, of a handler's `$result` for a reply of this
/// shape. A fault batch is encoded where the handler's result holds it: moving it out (into a
/// `Reply`) costs two copies of it on the fault path.
macro_rules! encode_result {
    (Faults, $result:expr) => {
        match $result {
            Ok(ref batch) => Ok(FaultBatch::encode(batch)),
            Err(error) => Err(error),
        }
    };
    ($shape:ident, $result:expr) => {
        $result.map(|value| reply_of!($shape, value).encode())
    };
}

macro_rules! capability_name {
    () => { None };
    ($what:ident) => { Some(stringify!($what)) };
}

macro_rules! operations {
    ($(
        $(#[doc = $doc:literal])*
        $number:literal $variant:ident $name:ident
        $( (capability $capability:ident) )?
        $( { $( $field:ident: $type:ty = $codec:expr ),* $(,)? } )?
        -> $shape:ident;
    )*) => {
        /// Operation numbers (request word 0, bits 0..16). Stable.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Opcode {
            $( $(#[doc = $doc])* $variant = $number, )*
        }

        impl Opcode {
            /// How many operations there are.
            pub const COUNT: usize = [$(Opcode::$variant),*].len();

            /// Every opcode, in the order declared.
            pub const ALL: [Opcode; Opcode::COUNT] = [$(Opcode::$variant),*];

            /// Decode, or [`Error::UnknownOpcode`].
            pub fn from_u16(value: u16) -> Result<Opcode, Error> {
                match value {
                    $( $number => Ok(Opcode::$variant), )*
                    _ => Err(Error::UnknownOpcode),
                }
            }

            /// The operation's name, as the API reference spells it.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Opcode::$variant => stringify!($name), )*
                }
            }

            /// What the capability the operation carries designates (`memory`, `device`,
            /// `address_space`), or `None` for an operation that must come without one.
            pub const fn capability(self) -> Option<&'static str> {
                match self {
                    $( Opcode::$variant => capability_name!($($capability)?), )*
                }
            }

            /// Whether the operation carries a capability transfer.
            pub const fn takes_capability(self) -> bool {
                self.capability().is_some()
            }

            /// The layout of the success reply.
            pub const fn reply_shape(self) -> ReplyShape {
                match self {
                    $( Opcode::$variant => ReplyShape::$shape, )*
                }
            }

            /// The operation's arguments, in the order the decoder checks them.
            pub fn arguments(self) -> Arguments {
                match self {
                    $( Opcode::$variant => Arguments::new(&[
                        $($( Argument { name: stringify!($field), claim: Arg::claim(&$codec), rights: Arg::rights(&$codec) }, )*)?
                    ]), )*
                }
            }
        }

        /// A decoded request: one variant per operation, its fields as the table declares.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Request {
            $( $(#[doc = $doc])* $variant $({ $( $field: $type ),* })?, )*
        }

        impl Request {
            /// The opcode of this request.
            pub const fn opcode(&self) -> Opcode {
                match self {
                    $( Request::$variant { .. } => Opcode::$variant, )*
                }
            }

            /// The message for this request. Encoding never fails: every `Request` value has
            /// a representation (fields that cannot be represented, such as a PASID above
            /// [`PASID_MAX`], are encoded as given and refused by `decode`).
            pub fn encode(&self) -> Message {
                let mut msg = [0u64; MESSAGE_WORDS];
                let mut flags = 0u16;
                match *self {
                    $( Request::$variant $({ $($field),* })? => {
                        $($( Arg::put(&$codec, $field, &mut msg, &mut flags); )*)?
                    } )*
                }
                msg[0] = header(self.opcode(), flags);
                msg
            }

            /// Decode and validate a request; `capability_present` tells whether the IPC
            /// carried a capability. Checks, in order: header reserved bits, opcode,
            /// capability presence, flag bits no argument claims, words no argument claims,
            /// then each argument in the order declared.
            pub fn decode(msg: &Message, capability_present: bool) -> Result<Request, Error> {
                if msg[0] & HEADER_RESERVED != 0 {
                    return Err(Error::ReservedBitsSet);
                }
                let opcode = Opcode::from_u16((msg[0] & OPCODE_MASK) as u16)?;
                let flags = (msg[0] >> FLAGS_SHIFT) as u16;
                match (opcode.takes_capability(), capability_present) {
                    (true, false) => return Err(Error::MissingCapability),
                    (false, true) => return Err(Error::UnexpectedCapability),
                    _ => {}
                }
                match opcode {
                    $( Opcode::$variant => {
                        let claim = Claim::NONE $($( .and(Arg::claim(&$codec)) )*)?;
                        check_unclaimed(msg, flags, claim)?;
                        Ok(Request::$variant $({ $( $field: Arg::get(&$codec, msg, flags)? ),* })?)
                    } )*
                }
            }
        }

        /// The server's side of the protocol: one method per operation, taking the decoded
        /// arguments (and the transferred capability, for the operations that carry one)
        /// and returning the reply's contents. [`serve`] calls them.
        pub trait Handler {
            $(
                $(#[doc = $doc])*
                fn $name(&mut self $($(, $field: $type)*)? $(, $capability: u64)?) -> Result<reply_payload!($shape), Error>;
            )*
        }

        /// Decode `msg` (which came with `cap`), run it on `handler` and encode the reply: an
        /// error reply when decoding or the handler fails.
        pub fn serve<H: Handler>(handler: &mut H, msg: &Message, cap: Option<u64>) -> Message {
            let reply = match Request::decode(msg, cap.is_some()) {
                Ok(request) => {
                    // `decode` guarantees a capability is present exactly for the
                    // operations that take one.
                    let cap = cap.unwrap_or(0);
                    match request {
                        $( Request::$variant $({ $($field),* })? => {
                            $( let $capability = cap; )?
                            // Encoded here, where the reply's variant is known, rather than
                            // moved out as a `Reply`.
                            encode_result!($shape, handler.$name($($($field,)*)? $($capability)?))
                        } )*
                    }
                }
                Err(error) => Err(error),
            };
            reply.unwrap_or_else(Reply::encode_error)
        }
    };
}

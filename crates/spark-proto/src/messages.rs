//! The registry of every message, and the one-definition-per-message macro behind it.
//!
//! A message is defined once, in [`crate::control`], [`crate::cache`] or [`crate::error`], by a
//! `define_messages!` block: the struct, its [`Message`](crate::Message) codec and its registry entry
//! ([`MessageInfo`]) all come from that one definition, so a layout cannot drift between the codec, the vector
//! test and the documentation. Only genuinely irregular layouts (GetResponse's status union,
//! NamespacesResponse's nested list) have hand-written codecs; their registry entries are hand-written next to
//! them and listed in the same block, so [`ALL`] still has every message.
//!
//! `docs/protocol-vectors.json` must hold at least one vector per entry of [`ALL`]
//! (`crates/spark-proto/tests/vectors.rs` checks it), and the Python client is checked against that file, so a
//! message added here without a vector, or without a Python class, fails a test.

/// One message as the protocol defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    /// `"control"` (service `0x0001`), `"cache"` (the Shader and Asset services share every layout), `"compile"`
    /// (service `0x0004`) or `"any"`
    /// (ErrorResponse: every service).
    pub service: &'static str,
    /// The message's name in `docs/protocol.md` and `docs/protocol-vectors.json`. A keyed cache message (see
    /// [`MessageInfo::keyed`]) is named generically here (`Get`); its vectors are named per key (`ShaderGet`,
    /// `AssetGet`).
    pub name: &'static str,
    /// The message type in the frame header.
    pub msg_type: u16,
    /// The payload's fields in wire order: `(name, wire type)`. Wire types are the notations of
    /// `docs/protocol.md` §5 (`u8` … `u128`, `bool`, `str16`, `list_u16`, `list_str16`, `bytes` for "the rest of
    /// the payload") plus `key` (the service's key, §8.1). Irregular layouts describe themselves in words.
    pub fields: &'static [(&'static str, &'static str)],
    /// True for the cache messages generic over the key (`Get<K>`, `Put<K>`, `PutStream<K>`, `Exists<K>`).
    pub keyed: bool,
    /// False when decoders ignore trailing bytes so later revisions can append fields (protocol.md §1.3).
    pub exact: bool,
}

impl MessageInfo {
    /// The names a vector for this message may carry in `docs/protocol-vectors.json`'s `message` key.
    pub fn vector_names(&self) -> Vec<String> {
        if self.keyed {
            vec![
                format!("Shader{}", self.name),
                format!("Asset{}", self.name),
            ]
        } else {
            vec![self.name.to_string()]
        }
    }
}

const PARTS: &[&[MessageInfo]] = &[
    crate::error::MESSAGES,
    crate::control::MESSAGES,
    crate::cache::MESSAGES,
    crate::watch::MESSAGES,
    crate::compile::MESSAGES,
    crate::collab::MESSAGES,
    crate::operator::MESSAGES,
];

const COUNT: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < PARTS.len() {
        n += PARTS[i].len();
        i += 1;
    }
    n
};

const fn concat<const N: usize>(parts: &[&[MessageInfo]]) -> [MessageInfo; N] {
    let mut out = [MessageInfo {
        service: "",
        name: "",
        msg_type: 0,
        fields: &[],
        keyed: false,
        exact: true,
    }; N];
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

const ALL_ARRAY: [MessageInfo; COUNT] = concat(PARTS);

/// Every message of the protocol: ErrorResponse, then the Control messages, then the cache messages.
pub const ALL: &[MessageInfo] = &ALL_ARRAY;

/// Defines a module's messages: for each, the struct, its [`Message`](crate::Message) impl and its
/// [`MessageInfo`] (as an inherent `INFO` constant); and the module's `MESSAGES` list for [`ALL`].
///
/// ```text
/// define_messages! {
///     service: "control";
///     hand_written: [NamespacesResponse::INFO];
///     /// Registers a process id as a sponsor of the daemon.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub struct RegisterSponsor = REGISTER_SPONSOR, exact {
///         pid: u32,
///     }
///     #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
///     pub struct Version = VERSION, exact;          // empty payload: a unit struct
///     #[derive(Debug, Clone, PartialEq, Eq)]
///     pub struct Get<K> = GET, exact { key: K }     // generic over the cache key: `K` is its wire key
/// }
/// ```
///
/// Field types pick the wire encoding: `u8` … `u128`, `bool` (a byte), `String` (`str16`), `Vec<u16>`
/// (`list_u16`), `Vec<String>` (`list_str16`), `Bytes` (the rest of the payload; last field only) and `K` (the
/// cache key). `exact` decoders reject trailing bytes; `lenient` ones ignore them. `as "Name"` overrides the
/// registry name.
macro_rules! define_messages {
    (
        service: $svc:literal;
        hand_written: [$($hw:expr),* $(,)?];
        $(
            $(#[$m:meta])*
            pub struct $name:ident $(<$k:ident>)? $(as $vname:literal)? = $ty:expr, $trail:ident $body:tt
        )*
    ) => {
        $(
            $crate::messages::define_messages!(@item [$(#[$m])*] $name [$($k)?] $ty, $trail $body);
            $crate::messages::define_messages!(@info_impl $name [$($k)?]
                $crate::messages::define_messages!(@info $svc, $name [$($vname)?] [$($k)?] $ty, $trail $body));
        )*

        /// Every message this module defines, in definition order, then the hand-written ones.
        pub(crate) const MESSAGES: &[$crate::messages::MessageInfo] = &[
            $( $crate::messages::define_messages!(@info $svc, $name [$($vname)?] [$($k)?] $ty, $trail $body), )*
            $( $hw, )*
        ];
    };

    (@info $svc:literal, $name:ident [$($vname:literal)?] [$($k:ident)?] $ty:expr, $trail:ident $body:tt) => {
        $crate::messages::MessageInfo {
            service: $svc,
            name: $crate::messages::define_messages!(@name $name $($vname)?),
            msg_type: $ty,
            fields: $crate::messages::define_messages!(@fields $body),
            keyed: $crate::messages::define_messages!(@keyed $($k)?),
            exact: $crate::messages::define_messages!(@exact $trail),
        }
    };
    (@info_impl $name:ident [] $info:expr) => {
        impl $name {
            /// This message's registry entry (see [`crate::messages::ALL`]).
            pub const INFO: $crate::messages::MessageInfo = $info;
        }
    };
    (@info_impl $name:ident [$k:ident] $info:expr) => {
        impl<$k> $name<$k> {
            /// This message's registry entry (see [`crate::messages::ALL`]).
            pub const INFO: $crate::messages::MessageInfo = $info;
        }
    };

    (@name $name:ident) => { stringify!($name) };
    (@name $name:ident $vname:literal) => { $vname };
    (@keyed) => { false };
    (@keyed $k:ident) => { true };
    (@exact exact) => { true };
    (@exact lenient) => { false };
    (@fields ;) => { &[] };
    (@fields { $( $(#[$fm:meta])* $f:ident : $t:ident $(<$g:ident>)? ),* $(,)? }) => {
        &[ $( (stringify!($f), $crate::messages::define_messages!(@wire [$t $($g)?])), )* ]
    };

    // An empty payload: a unit struct.
    (@item [$($m:tt)*] $name:ident [] $ty:expr, $trail:ident ;) => {
        $($m)*
        pub struct $name;
        impl $crate::Message for $name {
            const TYPE: u16 = $ty;
            fn encode(&self, _out: &mut ::bytes::BytesMut) {}
            fn decode(p: &::bytes::Bytes) -> Result<Self, $crate::ProtoError> {
                if p.is_empty() { Ok($name) } else { Err($crate::ProtoError::TrailingBytes) }
            }
        }
    };
    (@item [$($m:tt)*] $name:ident [$($k:ident)?] $ty:expr, $trail:ident
        { $( $(#[$fm:meta])* $f:ident : $t:ident $(<$g:ident>)? ),* $(,)? }) => {
        $($m)*
        pub struct $name $(<$k>)? {
            $( $(#[$fm])* pub $f: $t $(<$g>)?, )*
        }
        impl $(<$k: $crate::cache::WireKey>)? $crate::Message for $name $(<$k>)? {
            const TYPE: u16 = $ty;
            fn encode(&self, out: &mut ::bytes::BytesMut) {
                $( $crate::messages::define_messages!(@put [$t $($g)?], out, &self.$f); )*
            }
            fn decode(p: &::bytes::Bytes) -> Result<Self, $crate::ProtoError> {
                let mut r = $crate::codec::Reader::new(p);
                // Struct expressions evaluate their fields in the order written: wire order.
                let m = $name { $( $f: $crate::messages::define_messages!(@get [$t $($g)?], r), )* };
                $crate::messages::define_messages!(@finish $trail, r);
                Ok(m)
            }
        }
    };

    // Field types and their wire notation (protocol.md §5). The key type parameter must be spelled `K`.
    (@wire [u8]) => { "u8" };
    (@wire [u16]) => { "u16" };
    (@wire [u32]) => { "u32" };
    (@wire [u64]) => { "u64" };
    (@wire [u128]) => { "u128" };
    (@wire [bool]) => { "bool" };
    (@wire [String]) => { "str16" };
    (@wire [Vec u16]) => { "list_u16" };
    (@wire [Vec String]) => { "list_str16" };
    (@wire [Bytes]) => { "bytes" };
    (@wire [K]) => { "key" };
    // Any other `Vec<R>`: a list of [`Record`](crate::codec::Record)s.
    (@wire [Vec $r:ident]) => { concat!("list16 of ", stringify!($r)) };

    (@put [u8], $out:ident, $v:expr) => { ::bytes::BufMut::put_u8($out, *$v) };
    (@put [u16], $out:ident, $v:expr) => { ::bytes::BufMut::put_u16_le($out, *$v) };
    (@put [u32], $out:ident, $v:expr) => { ::bytes::BufMut::put_u32_le($out, *$v) };
    (@put [u64], $out:ident, $v:expr) => { ::bytes::BufMut::put_u64_le($out, *$v) };
    (@put [u128], $out:ident, $v:expr) => { ::bytes::BufMut::put_u128_le($out, *$v) };
    (@put [bool], $out:ident, $v:expr) => { ::bytes::BufMut::put_u8($out, u8::from(*$v)) };
    (@put [String], $out:ident, $v:expr) => { $crate::codec::put_str16($out, $v) };
    (@put [Vec u16], $out:ident, $v:expr) => { $crate::codec::put_list_u16($out, $v) };
    (@put [Vec String], $out:ident, $v:expr) => { $crate::codec::put_list_str16($out, $v) };
    (@put [Bytes], $out:ident, $v:expr) => { ::bytes::BufMut::put_slice($out, $v) };
    (@put [K], $out:ident, $v:expr) => { $crate::cache::WireKey::encode_key($v, $out) };
    (@put [Vec $r:ident], $out:ident, $v:expr) => { $crate::codec::put_records($out, $v) };

    (@get [u8], $r:ident) => { $r.u8()? };
    (@get [u16], $r:ident) => { $r.u16()? };
    (@get [u32], $r:ident) => { $r.u32()? };
    (@get [u64], $r:ident) => { $r.u64()? };
    (@get [u128], $r:ident) => { $r.u128()? };
    // Any non-zero byte is true (protocol.md §5).
    (@get [bool], $r:ident) => { $r.u8()? != 0 };
    (@get [String], $r:ident) => { $r.str16()? };
    (@get [Vec u16], $r:ident) => { $r.list_u16()? };
    (@get [Vec String], $r:ident) => { $r.list_str16()? };
    (@get [Bytes], $r:ident) => { $r.rest() };
    (@get [K], $r:ident) => { $crate::cache::WireKey::decode_key(&mut $r)? };
    (@get [Vec $g:ident], $r:ident) => { $r.records::<$g>()? };

    (@finish exact, $r:ident) => { $r.finish()? };
    (@finish lenient, $r:ident) => { let _ = $r; };
}
pub(crate) use define_messages;

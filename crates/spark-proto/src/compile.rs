//! The Compile service (`0x0004`): shader compilation in the daemon, cached by a content key.
//!
//! One [`CompileRequest`] carries a source, its include directories and include map, and one or more
//! permutations (define sets). The reply is a stream: a [`CompileAccepted`] first, then one StreamChunk per
//! permutation whose payload is a [`CompileResult`] (in completion order, each naming its permutation index),
//! then a StreamEnd whose checksum is the XXH3-128 of every chunk payload in the order sent. See
//! `docs/protocol.md` §13, which also specifies the cache key byte by byte.
//!
//! The request and result layouts hold lists of records, more than the field macro's flat layouts express, so
//! their codecs are hand-written here; the small messages come from [`define_messages!`](crate::messages).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, put_bytes32, put_list_str16, put_str16};
use crate::messages::{MessageInfo, define_messages};
use crate::{Message, ProtoError};

pub const COMPILE: u16 = 0x0001;
pub const COMPILE_ACCEPTED: u16 = 0x0002;
/// Not a reply of its own: the payload of each StreamChunk after a [`CompileAccepted`].
pub const COMPILE_RESULT: u16 = 0x0003;
pub const STATS: u16 = 0x0005;
pub const STATS_RESPONSE: u16 = 0x0006;

/// Most permutations one request may carry.
pub const MAX_PERMUTATIONS: usize = 4096;

/// [`CompileRequest::flags`] bit: emit debug information (SPIR-V names and line info where the backend can).
pub const FLAG_DEBUG: u8 = 1;
/// [`CompileRequest::flags`] bit: ask the backend to optimise (glslang: none today; naga: none). Part of the key.
pub const FLAG_OPTIMIZE: u8 = 2;

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:literal, $s:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v = $n,)* }
        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The wire byte.
            pub fn to_u8(self) -> u8 { self as u8 }
            /// Parses the wire byte.
            pub fn from_u8(b: u8) -> Option<$name> {
                match b { $($n => Some($name::$v),)* _ => None }
            }
            /// The lower-case name used by tools (`sparkctl`, JSON batches, the Python client).
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
            /// Parses [`Self::name`].
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }
    };
}

wire_enum!(
    /// Source language.
    Language {
        Wgsl = 1, "wgsl";
        Glsl = 2, "glsl";
        Hlsl = 3, "hlsl";
    }
);
wire_enum!(
    /// Pipeline stage.
    Stage {
        Vertex = 1, "vert";
        Fragment = 2, "frag";
        Compute = 3, "comp";
    }
);
wire_enum!(
    /// Output format.
    Target {
        SpirV = 1, "spirv";
        Msl = 2, "msl";
        Hlsl = 3, "hlsl";
        Glsl = 4, "glsl";
    }
);
wire_enum!(
    /// Which compiler runs the job. `Auto` picks naga where it can, else glslang.
    Backend {
        Auto = 0, "auto";
        Naga = 1, "naga";
        Glslang = 2, "glslang";
    }
);

/// A [`CompileResult`]'s status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResultStatus {
    /// Compiled: `output` holds the bytes.
    Ok = 0,
    /// The source does not compile: the diagnostics say why. Cached like a success (negative caching).
    CompileError = 1,
    /// The job did not run to an answer (timeout, worker crash, missing backend, refused include, limits):
    /// never cached; the first diagnostic says why.
    Failed = 2,
}

/// Where a [`CompileResult`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Origin {
    /// This request ran the compile.
    Fresh = 0,
    /// Served from the `compile` namespace.
    Hit = 1,
    /// Joined a compile another request (any connection) had in flight.
    Joined = 2,
}

/// One file a source includes, given by content (the include map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeFile {
    /// Virtual path, `/`-separated, relative: what `#include "…"` names.
    pub path: String,
    pub content: String,
}

/// Compile: `u8` language, `u8` stage, `u8` target, `u8` backend, `u8` flags, `u16` SPIR-V version
/// (`major << 8 | minor`, 0 = the backend's default), `str16` entry point, `list_str16` include directories,
/// `u16` count then per include-map entry `str16` path and `u32`-prefixed content, `u16` count (1 ..
/// [`MAX_PERMUTATIONS`]) then per permutation a `list_str16` of defines (`NAME` or `NAME=VALUE`), then the
/// `u32`-prefixed UTF-8 source. Exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileRequest {
    pub language: Language,
    pub stage: Stage,
    pub target: Target,
    pub backend: Backend,
    pub flags: u8,
    pub spirv_version: u16,
    pub entry: String,
    pub include_dirs: Vec<String>,
    pub include_map: Vec<IncludeFile>,
    pub permutations: Vec<Vec<String>>,
    pub source: String,
}

impl CompileRequest {
    /// A request for one permutation with no defines: backend auto, entry point `main`, no includes.
    pub fn new(
        language: Language,
        stage: Stage,
        target: Target,
        source: impl Into<String>,
    ) -> Self {
        CompileRequest {
            language,
            stage,
            target,
            backend: Backend::Auto,
            flags: 0,
            spirv_version: 0,
            entry: "main".into(),
            include_dirs: Vec::new(),
            include_map: Vec::new(),
            permutations: vec![Vec::new()],
            source: source.into(),
        }
    }

    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "compile",
        name: "CompileRequest",
        msg_type: COMPILE,
        fields: &[
            ("language", "u8"),
            ("stage", "u8"),
            ("target", "u8"),
            ("backend", "u8"),
            ("flags", "u8"),
            ("spirv_version", "u16"),
            ("entry", "str16"),
            ("include_dirs", "list_str16"),
            (
                "include_map",
                "u16 count, then per file: path str16, content (u32 length, UTF-8)",
            ),
            (
                "permutations",
                "u16 count, then per permutation: defines list_str16",
            ),
            ("source", "u32 length, UTF-8"),
        ],
        keyed: false,
        exact: true,
    };
}

fn enum_byte<T>(b: u8, f: fn(u8) -> Option<T>, what: &'static str) -> Result<T, ProtoError> {
    f(b).ok_or(ProtoError::InvalidValue(what))
}

impl Message for CompileRequest {
    const TYPE: u16 = COMPILE;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.language.to_u8());
        out.put_u8(self.stage.to_u8());
        out.put_u8(self.target.to_u8());
        out.put_u8(self.backend.to_u8());
        out.put_u8(self.flags);
        out.put_u16_le(self.spirv_version);
        put_str16(out, &self.entry);
        put_list_str16(out, &self.include_dirs);
        out.put_u16_le(self.include_map.len() as u16);
        for f in &self.include_map {
            put_str16(out, &f.path);
            put_bytes32(out, f.content.as_bytes());
        }
        out.put_u16_le(self.permutations.len() as u16);
        for p in &self.permutations {
            put_list_str16(out, p);
        }
        put_bytes32(out, self.source.as_bytes());
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let language = enum_byte(r.u8()?, Language::from_u8, "language")?;
        let stage = enum_byte(r.u8()?, Stage::from_u8, "stage")?;
        let target = enum_byte(r.u8()?, Target::from_u8, "target")?;
        let backend = enum_byte(r.u8()?, Backend::from_u8, "backend")?;
        let flags = r.u8()?;
        let spirv_version = r.u16()?;
        let entry = r.str16()?;
        let include_dirs = r.list_str16()?;
        let n = r.u16()? as usize;
        let mut include_map = Vec::with_capacity(n.min(r.remaining() / 6));
        for _ in 0..n {
            let path = r.str16()?;
            include_map.push(IncludeFile {
                path,
                content: r.str32()?,
            });
        }
        let n = r.u16()? as usize;
        if n == 0 || n > MAX_PERMUTATIONS {
            return Err(ProtoError::InvalidValue("permutation count"));
        }
        let mut permutations = Vec::with_capacity(n.min(r.remaining() / 2));
        for _ in 0..n {
            permutations.push(r.list_str16()?);
        }
        let source = r.str32()?;
        r.finish()?;
        Ok(CompileRequest {
            language,
            stage,
            target,
            backend,
            flags,
            spirv_version,
            entry,
            include_dirs,
            include_map,
            permutations,
            source,
        })
    }
}

/// A diagnostic's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Severity {
    Error = 0,
    Warning = 1,
    Note = 2,
}

/// One compiler message, mapped back to the file and line it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `<source>` for the request's source, else the include as written (`common/light.glsl`).
    pub file: String,
    /// 1-based; 0 when the compiler gave no position.
    pub line: u32,
    /// 1-based; 0 when unknown.
    pub column: u32,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    /// Like a compiler: `file:line:column: error: message`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {sev}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{l}: {sev}: {}", self.file, self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {sev}: {}", self.file, self.message),
        }
    }
}

/// A resource binding the shader declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Binding {
    pub set: u32,
    pub binding: u32,
    pub kind: BindingKind,
}

/// What a [`Binding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BindingKind {
    UniformBuffer = 1,
    StorageBuffer = 2,
    SampledTexture = 3,
    StorageTexture = 4,
    Sampler = 5,
    Other = 255,
}

impl BindingKind {
    fn from_u8(b: u8) -> BindingKind {
        match b {
            1 => BindingKind::UniformBuffer,
            2 => BindingKind::StorageBuffer,
            3 => BindingKind::SampledTexture,
            4 => BindingKind::StorageTexture,
            5 => BindingKind::Sampler,
            _ => BindingKind::Other,
        }
    }
    /// The name tools print.
    pub fn name(self) -> &'static str {
        match self {
            BindingKind::UniformBuffer => "uniform-buffer",
            BindingKind::StorageBuffer => "storage-buffer",
            BindingKind::SampledTexture => "sampled-texture",
            BindingKind::StorageTexture => "storage-texture",
            BindingKind::Sampler => "sampler",
            BindingKind::Other => "other",
        }
    }
}

/// The outcome of one permutation. See [`COMPILE_RESULT`]: `u16` permutation index, `u8` status
/// ([`ResultStatus`]), `u8` origin ([`Origin`]), 32 bytes cache key (BLAKE3, zero when the request failed
/// before a key existed), `str16` compiler identity (`naga 25.0.1`), `str16` entry point, 3 × `u32` workgroup
/// size (zero unless compute), `u16` count then per binding `u32` set, `u32` binding, `u8` kind, `u16` count
/// then per diagnostic `u8` severity, `str16` file, `u32` line, `u32` column, `str16` message, then the
/// `u32`-prefixed output bytes. Exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileResult {
    pub index: u16,
    pub status: ResultStatus,
    pub origin: Origin,
    pub key: [u8; 32],
    pub compiler: String,
    pub entry: String,
    pub workgroup_size: [u32; 3],
    pub bindings: Vec<Binding>,
    pub diagnostics: Vec<Diagnostic>,
    pub output: Bytes,
}

impl CompileResult {
    /// This message's registry entry (see [`crate::messages::ALL`]).
    pub const INFO: MessageInfo = MessageInfo {
        service: "compile",
        name: "CompileResult",
        msg_type: COMPILE_RESULT,
        fields: &[
            ("index", "u16"),
            ("status", "u8"),
            ("origin", "u8"),
            ("key", "32 bytes"),
            ("compiler", "str16"),
            ("entry", "str16"),
            ("workgroup_size", "3 x u32"),
            (
                "bindings",
                "u16 count, then per binding: set u32, binding u32, kind u8",
            ),
            (
                "diagnostics",
                "u16 count, then per diagnostic: severity u8, file str16, line u32, column u32, message str16",
            ),
            ("output", "u32 length, bytes"),
        ],
        keyed: false,
        exact: true,
    };

    /// The key as lower-case hex.
    pub fn key_hex(&self) -> String {
        self.key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The errors among the diagnostics.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl Message for CompileResult {
    const TYPE: u16 = COMPILE_RESULT;
    fn encode(&self, out: &mut BytesMut) {
        out.put_u16_le(self.index);
        out.put_u8(self.status as u8);
        out.put_u8(self.origin as u8);
        out.put_slice(&self.key);
        put_str16(out, &self.compiler);
        put_str16(out, &self.entry);
        for w in self.workgroup_size {
            out.put_u32_le(w);
        }
        out.put_u16_le(self.bindings.len() as u16);
        for b in &self.bindings {
            out.put_u32_le(b.set);
            out.put_u32_le(b.binding);
            out.put_u8(b.kind as u8);
        }
        out.put_u16_le(self.diagnostics.len() as u16);
        for d in &self.diagnostics {
            out.put_u8(d.severity as u8);
            put_str16(out, &d.file);
            out.put_u32_le(d.line);
            out.put_u32_le(d.column);
            put_str16(out, &d.message);
        }
        put_bytes32(out, &self.output);
    }
    fn decode(p: &Bytes) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let index = r.u16()?;
        let status = match r.u8()? {
            0 => ResultStatus::Ok,
            1 => ResultStatus::CompileError,
            2 => ResultStatus::Failed,
            _ => return Err(ProtoError::InvalidValue("compile status")),
        };
        let origin = match r.u8()? {
            0 => Origin::Fresh,
            1 => Origin::Hit,
            2 => Origin::Joined,
            _ => return Err(ProtoError::InvalidValue("compile origin")),
        };
        let mut key = [0u8; 32];
        for b in key.iter_mut() {
            *b = r.u8()?;
        }
        let compiler = r.str16()?;
        let entry = r.str16()?;
        let workgroup_size = [r.u32()?, r.u32()?, r.u32()?];
        let n = r.u16()? as usize;
        let mut bindings = Vec::with_capacity(n.min(r.remaining() / 9));
        for _ in 0..n {
            bindings.push(Binding {
                set: r.u32()?,
                binding: r.u32()?,
                kind: BindingKind::from_u8(r.u8()?),
            });
        }
        let n = r.u16()? as usize;
        let mut diagnostics = Vec::with_capacity(n.min(r.remaining() / 13));
        for _ in 0..n {
            let severity = match r.u8()? {
                0 => Severity::Error,
                1 => Severity::Warning,
                _ => Severity::Note,
            };
            diagnostics.push(Diagnostic {
                severity,
                file: r.str16()?,
                line: r.u32()?,
                column: r.u32()?,
                message: r.str16()?,
            });
        }
        let output = r.bytes32()?;
        r.finish()?;
        Ok(CompileResult {
            index,
            status,
            origin,
            key,
            compiler,
            entry,
            workgroup_size,
            bindings,
            diagnostics,
            output,
        })
    }
}

define_messages! {
    service: "compile";
    hand_written: [CompileRequest::INFO, CompileResult::INFO];

    /// The first frame of a compile reply: `u16` permutations that follow, one StreamChunk each.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CompileAccepted = COMPILE_ACCEPTED, exact {
        permutations: u16,
    }

    /// Asks for [`CompileStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Stats as "CompileStatsRequest" = STATS, exact;

    /// The Compile service's counters, all `u64`, in this order. Decoders ignore trailing bytes so later
    /// revisions can append counters. Times are microseconds over the last 1024 compiles run.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct CompileStats = STATS_RESPONSE, lenient {
        /// Compiles run (fresh), successful or not.
        compiles: u64,
        hits: u64,
        /// Hits on a cached compile error.
        negative_hits: u64,
        joins: u64,
        /// Fresh compiles that ended in a compile error.
        failures: u64,
        timeouts: u64,
        worker_crashes: u64,
        /// Jobs waiting for a pool slot now.
        queue_depth: u64,
        /// Jobs running now.
        running: u64,
        /// Pool size (`--compile-jobs`).
        jobs: u64,
        p50_us: u64,
        p90_us: u64,
        p99_us: u64,
        max_us: u64,
    }
}

impl CompileStats {
    /// Field names in wire order, for tables and JSON.
    pub const FIELDS: [&'static str; 14] = {
        assert!(CompileStats::INFO.fields.len() == 14);
        let mut names = [""; 14];
        let mut i = 0;
        while i < CompileStats::INFO.fields.len() {
            names[i] = CompileStats::INFO.fields[i].0;
            i += 1;
        }
        names
    };
    pub fn values(&self) -> [u64; 14] {
        [
            self.compiles,
            self.hits,
            self.negative_hits,
            self.joins,
            self.failures,
            self.timeouts,
            self.worker_crashes,
            self.queue_depth,
            self.running,
            self.jobs,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us,
        ]
    }
}

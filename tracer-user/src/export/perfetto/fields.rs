//! Field numbers and enum values of Perfetto's trace protos that the
//! export writes (TracePacket, ClockSnapshot, TrackDescriptor,
//! CounterDescriptor, TrackEvent, DebugAnnotation; see the parent module
//! for where they come from), and the debug annotations (name and typed
//! value) attached to slices and instants.

use crate::export::proto::Proto;

// TracePacket
pub(super) const P_TIMESTAMP: u32 = 8;
pub(super) const P_CLOCK_SNAPSHOT: u32 = 6;
pub(super) const P_SEQ_ID: u32 = 10;
pub(super) const P_TRACK_EVENT: u32 = 11;
pub(super) const P_SEQ_FLAGS: u32 = 13;
pub(super) const P_CLOCK_ID: u32 = 58;
pub(super) const P_TRACK_DESCRIPTOR: u32 = 60;
pub(super) const P_FIRST_ON_SEQ: u32 = 87;
pub(super) const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
pub(super) const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;
// ClockSnapshot / ClockSnapshot.Clock / BuiltinClock
pub(super) const CS_CLOCKS: u32 = 1;
pub(super) const CS_PRIMARY: u32 = 2;
pub(super) const CLK_ID: u32 = 1;
pub(super) const CLK_TIMESTAMP: u32 = 2;
pub(super) const CLOCK_REALTIME: u64 = 1;
pub(super) const CLOCK_MONOTONIC: u64 = 3;
// TrackDescriptor / CounterDescriptor
pub(super) const TD_UUID: u32 = 1;
pub(super) const TD_NAME: u32 = 2;
pub(super) const TD_PARENT: u32 = 5;
pub(super) const TD_COUNTER: u32 = 8;
pub(super) const CD_UNIT: u32 = 3;
pub(super) const UNIT_COUNT: u64 = 2;
// TrackEvent
pub(super) const TE_DEBUG: u32 = 4;
pub(super) const TE_TYPE: u32 = 9;
pub(super) const TE_TRACK: u32 = 11;
pub(super) const TE_NAME: u32 = 23;
pub(super) const TE_COUNTER: u32 = 30;
pub(super) const TE_FLOW: u32 = 47;
pub(super) const TE_TERM_FLOW: u32 = 48;
pub(super) const TYPE_SLICE_BEGIN: u64 = 1;
pub(super) const TYPE_SLICE_END: u64 = 2;
pub(super) const TYPE_INSTANT: u64 = 3;
pub(super) const TYPE_COUNTER: u64 = 4;
// DebugAnnotation
pub(super) const DA_BOOL: u32 = 2;
pub(super) const DA_UINT: u32 = 3;
pub(super) const DA_INT: u32 = 4;
pub(super) const DA_STRING: u32 = 6;
pub(super) const DA_POINTER: u32 = 7;
pub(super) const DA_NAME: u32 = 10;

/// A debug annotation value.
pub(super) enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Uint(u64),
    Ptr(u64),
    Bool(bool),
}

pub(super) fn annotations(p: &mut Proto, args: &[(&str, Val<'_>)]) {
    for (name, v) in args {
        p.message(TE_DEBUG, |a| {
            a.string(DA_NAME, name);
            match *v {
                Val::Str(s) => a.string(DA_STRING, s),
                Val::Int(i) => a.int(DA_INT, i),
                Val::Uint(u) => a.uint(DA_UINT, u),
                Val::Ptr(u) => a.uint(DA_POINTER, u),
                Val::Bool(b) => a.bool(DA_BOOL, b),
            }
        });
    }
}

/// Boolean annotations, written only when true.
pub(super) fn flags_true(p: &mut Proto, args: &[(&str, bool)]) {
    for &(name, v) in args {
        if v {
            annotations(p, &[(name, Val::Bool(true))]);
        }
    }
}

//! Security cases: money (filled in by issue 16's work).

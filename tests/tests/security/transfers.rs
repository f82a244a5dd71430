//! Security cases: transfers (filled in by issue 16's work).

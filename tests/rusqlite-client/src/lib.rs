//! Nothing here: the test is `tests/roundtrip.rs`. A package needs a target, so this is it.

//! Failures as results (design §"Errors"): the text of a caught panic, libtorch's messages without
//! their C++ backtraces, and the out-of-memory test that turns a failure into the `oom` status.
//!
//! tch's infallible operations panic on libtorch errors (a CUDA out-of-memory among them), so every
//! place that must record a failure instead of crashing (the runner, `measure`, `bench`) catches
//! panics through [`catch`]. A leaf of the layering (`docs/architecture.md`).

/// Runs `f`; an error or a panic becomes `Err` with the panic's message as an `anyhow::Error`.
pub fn catch<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(anyhow::anyhow!("{}", panic_message(payload.as_ref()))),
    }
}

/// The message of a caught panic payload (`String` or `&str`; anything else has none).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic without a message".to_string())
}

/// libtorch's allocation-failure messages: CUDA ("CUDA out of memory", "CUDA error: out of
/// memory"), the CPU allocator ("DefaultCPUAllocator: can't allocate memory … Error code 12
/// (Cannot allocate memory)" in 2.11, "not enough memory" in older releases), and C++ `bad_alloc`.
pub fn is_oom_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory", "bad_alloc"]
        .iter()
        .any(|pattern| m.contains(pattern))
}

/// libtorch appends a C++ backtrace (`frame #0: …`) to its messages; this keeps the text before it.
pub fn without_backtrace(message: &str) -> String {
    message.split("\nframe #").next().unwrap_or(message).trim_end().to_string()
}

/// A failure's message without libtorch's C++ backtrace, also where tch's panic shows it escaped
/// inside `Torch("…\nframe #0: …")`, and without the `Result::unwrap()` wrapper of that panic.
pub fn concise(message: &str) -> String {
    let m = without_backtrace(message);
    let m = m.split("\\nframe #").next().unwrap_or(&m);
    let m = m.strip_prefix("called `Result::unwrap()` on an `Err` value: ").unwrap_or(m);
    m.strip_prefix("Torch(\"").map(|r| r.trim_end_matches("\")")).unwrap_or(m).to_string()
}

/// The message buffer of a call into the C++ shim (`src/shim/error.h`: a caught exception's
/// message, truncated to [`ShimError::LEN`] − 1 bytes and NUL-terminated), on the stack.
pub struct ShimError([std::os::raw::c_char; ShimError::LEN]);

impl ShimError {
    pub const LEN: usize = 1024;

    pub fn new() -> Self {
        ShimError([0; Self::LEN])
    }

    /// The `(err, err_len)` arguments of a shim function.
    pub fn as_arg(&mut self) -> (*mut std::os::raw::c_char, std::os::raw::c_long) {
        (self.0.as_mut_ptr(), Self::LEN as std::os::raw::c_long)
    }

    /// The message the shim wrote (empty when it wrote none).
    pub fn message(&self) -> String {
        // The buffer starts zeroed, the shim writes at most LEN − 1 bytes and a NUL, and the last
        // byte is never written otherwise: the bytes up to the first NUL are the message.
        let bytes: Vec<u8> = self.0.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Default for ShimError {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_errors_and_panics() {
        let e = catch(|| -> anyhow::Result<()> { anyhow::bail!("plain error") }).unwrap_err();
        assert_eq!(e.to_string(), "plain error");
        let p = catch(|| -> anyhow::Result<()> { panic!("boom {}", 7) }).unwrap_err();
        assert_eq!(p.to_string(), "boom 7");
        let s = catch(|| -> anyhow::Result<()> { std::panic::panic_any(3_u8) }).unwrap_err();
        assert_eq!(s.to_string(), "panic without a message");
        assert_eq!(catch(|| Ok(5)).unwrap(), 5);
    }

    #[test]
    fn concise_strips_the_unwrap_wrapper_and_backtraces() {
        let raw = "called `Result::unwrap()` on an `Err` value: Torch(\"bad shape\\nframe #0: at::f()\")";
        assert_eq!(concise(raw), "bad shape");
        assert_eq!(concise("no memory.\nframe #0: c10::f() + 0x6a"), "no memory.");
    }
}

//! Choosing where and in what precision to run: `--device cpu|cuda[:N]`, `--dtype`.

use crate::error::{Error, Result};
use candle_core::{DType, Device};

/// Parses `cpu`, `cuda`, `cuda:N` or `cuda:auto` (the GPU of `LOCAL_RANK`) into a
/// candle device.
pub fn parse_device(spec: &str) -> Result<Device> {
    match device_ordinal(spec)? {
        None => Ok(Device::Cpu),
        Some(n) => cuda(n),
    }
}

/// Checks the syntax of a device spec without opening the device: `None` for the CPU,
/// the CUDA ordinal otherwise. Recipes for GPUs validate on machines without one.
pub fn device_ordinal(spec: &str) -> Result<Option<usize>> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(None),
        "cuda" | "gpu" => Ok(Some(0)),
        // One process per GPU (torchrun, Slurm): this process's local rank.
        "cuda:auto" => {
            let resolved = crate::shard::resolve_device(&spec, &|k| std::env::var(k).ok())?;
            device_ordinal(&resolved)
        }
        s if s.starts_with("cuda:") => s[5..].parse().map(Some).map_err(|_| {
            Error::bad_value(
                "--device",
                format!("invalid device {spec:?}: expected cuda:N"),
            )
        }),
        _ => Err(Error::bad_value(
            "--device",
            format!("invalid device {spec:?}: expected cpu, cuda, cuda:N or cuda:auto"),
        )),
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::unsupported(
            "this ckpt was built without CUDA; rebuild with `--features cuda`",
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        Error::bad_value(
            "--device",
            format!(
                "cannot open CUDA device {ordinal}: {} (`nvidia-smi` lists the GPUs \
             that the driver sees)",
                without_backtrace(&e)
            ),
        )
    })
}

/// candle's error message without the backtrace it attaches when `RUST_BACKTRACE` is set,
/// so that the error stays one line.
fn without_backtrace(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(inner),
        e => e.to_string(),
    }
}

/// Parses `f32`, `bf16` or `f16` (and their long names).
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
        other => Err(Error::bad_value(
            "--dtype",
            format!("invalid dtype {other:?}: expected f32, bf16 or f16"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_dtype("bfloat16").unwrap(), DType::BF16);
        assert_eq!(parse_dtype("F16").unwrap(), DType::F16);
        assert!(parse_dtype("int8").is_err());
    }

    #[test]
    fn device_errors_leave_out_backtraces() {
        let e = candle_core::Error::Msg("no driver".into()).bt();
        assert_eq!(without_backtrace(&e), "no driver");
    }
}

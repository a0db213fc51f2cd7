//! Choosing where and in what precision to run: `--device cpu|cuda[:N]`, `--dtype`.

use crate::error::{Error, Result};
use candle_core::{DType, Device};

/// Parses `cpu`, `cuda` or `cuda:N` into a candle device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        s if s.starts_with("cuda:") => {
            let n = s[5..]
                .parse()
                .map_err(|_| Error::Invalid(format!("invalid device {spec:?}: expected cuda:N")))?;
            cuda(n)
        }
        _ => Err(Error::Invalid(format!(
            "invalid device {spec:?}: expected cpu, cuda or cuda:N"
        ))),
    }
}

fn cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::Invalid(
            "this ckpt was built without CUDA; rebuild with `--features cuda`".into(),
        ));
    }
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Invalid(format!("cannot open CUDA device {ordinal}: {e}")))
}

/// Parses `f32`, `bf16` or `f16` (and their long names).
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "fp16" | "half" => Ok(DType::F16),
        other => Err(Error::Invalid(format!(
            "invalid dtype {other:?}: expected f32, bf16 or f16"
        ))),
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
}

//! Triton's binary tensor data extension to KServe v2 HTTP
//! (`Inference-Header-Content-Length`): the JSON inference header, then the
//! raw bytes of every input whose `parameters.binary_data_size` says so, in
//! input order. Official Triton clients (`tritonclient.http`) send inputs
//! this way and ask for outputs this way by default.
//!
//! Element layout: little-endian, row-major; BOOL one byte; BYTES each
//! element as a 4-byte little-endian length and its bytes.

use bytes::{BufMut, Bytes, BytesMut};
use infergate_backends::tensor::{DataType, TensorData};

/// The request and response header that says how long the JSON part is.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// What is wrong with a request's binary tensor data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("inputs[{input}] declares binary_data_size {size} but only {left} bytes follow")]
    Short { input: usize, size: usize, left: usize },
    #[error("{0} bytes after the inference header belong to no input")]
    Unclaimed(usize),
    #[error("a BYTES element's 4-byte length is cut off")]
    LengthCut,
    #[error("a BYTES element says {len} bytes but {left} remain")]
    ElementCut { len: usize, left: usize },
    #[error("the binary data holds {found} BYTES elements; the shape says {count}")]
    Elements { found: usize, count: u64 },
    #[error("binary_data_size is {size} bytes; {count} {datatype} elements take {needed}")]
    Size { size: usize, count: u64, datatype: &'static str, needed: String },
    #[error("BYTES elements must be UTF-8 text")]
    NotText,
}

/// Split the binary section after the JSON header into each input's bytes,
/// by the `binary_data_size` of each input (`None` for JSON inputs). Every
/// byte must belong to an input.
pub fn split_inputs(sizes: &[Option<u64>], mut binary: Bytes) -> Result<Vec<Option<Bytes>>, BinaryError> {
    let mut parts = Vec::with_capacity(sizes.len());
    for (i, size) in sizes.iter().enumerate() {
        parts.push(match size {
            None => None,
            Some(size) => {
                let size = usize::try_from(*size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(BinaryError::Short { input: i, size, left: binary.len() });
                }
                Some(binary.split_to(size))
            }
        });
    }
    if !binary.is_empty() {
        return Err(BinaryError::Unclaimed(binary.len()));
    }
    Ok(parts)
}

/// Bytes per element of a fixed-size datatype (`None` for BYTES).
fn element_size(datatype: DataType) -> Option<usize> {
    Some(match datatype {
        DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
        DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
        DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
        DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        DataType::Bytes => return None,
    })
}

/// BYTES elements: each a 4-byte little-endian length, then its bytes.
pub fn bytes_elements(raw: &[u8], count: u64) -> Result<Vec<&[u8]>, BinaryError> {
    let mut rest = raw;
    let mut elements = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(BinaryError::LengthCut);
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(BinaryError::ElementCut { len, left: tail.len() });
        }
        let (element, tail) = tail.split_at(len);
        elements.push(element);
        rest = tail;
    }
    if elements.len() as u64 != count {
        return Err(BinaryError::Elements { found: elements.len(), count });
    }
    Ok(elements)
}

/// Decode `count` elements of `datatype` from their binary form.
pub fn decode(datatype: DataType, count: u64, raw: &[u8]) -> Result<TensorData, BinaryError> {
    let Some(size) = element_size(datatype) else { return decode_text(raw, count) };
    let expected = usize::try_from(count).ok().and_then(|c| c.checked_mul(size));
    if expected != Some(raw.len()) {
        return Err(BinaryError::Size {
            size: raw.len(),
            count,
            datatype: datatype.as_str(),
            needed: expected.map_or_else(|| "more".to_string(), |e| e.to_string()),
        });
    }
    let chunks = raw.chunks_exact(size);
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        DataType::Fp16 => {
            TensorData::Float(chunks.map(|c| f64::from(half::f16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Fp32 => TensorData::Float(
            chunks.map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        ),
        DataType::Fp64 => TensorData::Float(chunks.map(|c| f64::from_le_bytes(eight(c))).collect()),
        DataType::Uint8 => TensorData::Int(raw.iter().map(|&b| i128::from(b)).collect()),
        DataType::Int8 => TensorData::Int(raw.iter().map(|&b| i128::from(b as i8)).collect()),
        DataType::Uint16 => {
            TensorData::Int(chunks.map(|c| i128::from(u16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Int16 => {
            TensorData::Int(chunks.map(|c| i128::from(i16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Uint32 => TensorData::Int(
            chunks.map(|c| i128::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        ),
        DataType::Int32 => TensorData::Int(
            chunks.map(|c| i128::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        ),
        DataType::Uint64 => {
            TensorData::Int(chunks.map(|c| i128::from(u64::from_le_bytes(eight(c)))).collect())
        }
        DataType::Int64 => {
            TensorData::Int(chunks.map(|c| i128::from(i64::from_le_bytes(eight(c)))).collect())
        }
        DataType::Bytes => return decode_text(raw, count),
    })
}

/// BYTES elements as text (the tensor type infergate's models take).
fn decode_text(raw: &[u8], count: u64) -> Result<TensorData, BinaryError> {
    bytes_elements(raw, count)?
        .into_iter()
        .map(|e| String::from_utf8(e.to_vec()).map_err(|_| BinaryError::NotText))
        .collect::<Result<Vec<_>, _>>()
        .map(TensorData::Bytes)
}

fn eight(c: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    a
}

/// The binary form of a tensor's elements (the inverse of [`decode`]).
pub fn encode(datatype: DataType, data: &TensorData) -> Bytes {
    let mut out = BytesMut::new();
    match data {
        TensorData::Bool(v) => v.iter().for_each(|&b| out.put_u8(u8::from(b))),
        TensorData::Bytes(v) => {
            for s in v {
                out.put_u32_le(u32::try_from(s.len()).unwrap_or(u32::MAX));
                out.put_slice(s.as_bytes());
            }
        }
        TensorData::Float(v) => {
            for &x in v {
                match datatype {
                    DataType::Fp16 => out.put_slice(&half::f16::from_f64(x).to_le_bytes()),
                    DataType::Fp64 => out.put_f64_le(x),
                    _ => out.put_f32_le(x as f32),
                }
            }
        }
        // Values were range-checked against the datatype when the tensor was built.
        TensorData::Int(v) => {
            for &x in v {
                match datatype {
                    DataType::Fp16 => out.put_slice(&half::f16::from_f64(x as f64).to_le_bytes()),
                    DataType::Fp32 => out.put_f32_le(x as f32),
                    DataType::Fp64 => out.put_f64_le(x as f64),
                    DataType::Uint8 | DataType::Int8 | DataType::Bool => out.put_u8(x as u8),
                    DataType::Uint16 | DataType::Int16 => out.put_u16_le(x as u16),
                    DataType::Uint32 | DataType::Int32 => out.put_u32_le(x as u32),
                    _ => out.put_u64_le(x as u64),
                }
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        let cases = [
            (DataType::Bool, TensorData::Bool(vec![true, false, true])),
            (DataType::Uint8, TensorData::Int(vec![0, 255, 7])),
            (DataType::Int8, TensorData::Int(vec![-128, 127, 0])),
            (DataType::Uint16, TensorData::Int(vec![65535, 1, 0])),
            (DataType::Int16, TensorData::Int(vec![-32768, 32767, -1])),
            (DataType::Uint32, TensorData::Int(vec![4_294_967_295, 0, 9])),
            (DataType::Int32, TensorData::Int(vec![-2_147_483_648, 2_147_483_647, 5])),
            (DataType::Uint64, TensorData::Int(vec![18_446_744_073_709_551_615, 0, 1])),
            (DataType::Int64, TensorData::Int(vec![i128::from(i64::MIN), i128::from(i64::MAX), 3])),
            (DataType::Fp16, TensorData::Float(vec![0.5, -2.0, 1024.0])),
            (DataType::Fp32, TensorData::Float(vec![0.25, -1.5, 1024.5])),
            (DataType::Fp64, TensorData::Float(vec![0.1, -1e300, 7.0])),
            (DataType::Bytes, TensorData::Bytes(vec!["héllo".into(), String::new(), "x".into()])),
        ];
        for (datatype, data) in cases {
            let raw = encode(datatype, &data);
            assert_eq!(decode(datatype, 3, &raw).unwrap(), data, "{datatype:?}");
        }
    }

    #[test]
    fn sizes_that_do_not_add_up_are_errors() {
        assert!(decode(DataType::Fp32, 3, &[0u8; 8]).unwrap_err().to_string().contains("take 12"));
        assert!(decode(DataType::Bytes, 1, &[5, 0, 0, 0, b'a']).unwrap_err().to_string().contains("5 bytes"));
        assert!(decode(DataType::Bytes, 1, &[1, 0]).unwrap_err().to_string().contains("cut off"));
        assert!(decode(DataType::Bytes, 2, &[1, 0, 0, 0, b'a'])
            .unwrap_err()
            .to_string()
            .contains("shape says 2"));
        assert!(decode(DataType::Bytes, 1, &[1, 0, 0, 0, 0xff]).unwrap_err().to_string().contains("UTF-8"));
        let body = Bytes::from_static(&[1, 2, 3, 4, 5]);
        assert_eq!(
            split_inputs(&[Some(2), None, Some(3)], body.clone()).unwrap(),
            vec![Some(body.slice(..2)), None, Some(body.slice(2..))]
        );
        assert!(split_inputs(&[Some(6)], body.clone()).unwrap_err().to_string().contains("only 5"));
        assert!(split_inputs(&[Some(2)], body).unwrap_err().to_string().contains("belong to no input"));
    }
}

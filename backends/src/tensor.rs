//! Tensors as KServe v2 describes them: a name, a datatype, a shape and
//! row-major data.

use std::fmt;
use std::str::FromStr;

/// Why a tensor (or its datatype's name) is not one KServe v2 allows; the
/// text is the client's 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("unknown datatype {0:?}")]
    UnknownDatatype(String),
    /// A member of the JSON form is missing or not of its type: `name`,
    /// `datatype` or `shape`.
    #[error("a tensor needs a {0}")]
    Missing(&'static str),
    #[error("shape dimensions are non-negative integers")]
    Dimension,
    #[error("input '{name}': shape {shape:?} is too large")]
    TooLarge { name: String, shape: Vec<u64> },
    #[error("input '{name}': shape {shape:?} holds {expected} elements but {given} were given")]
    Count { name: String, shape: Vec<u64>, expected: u64, given: usize },
    /// The data's values do not fit the datatype.
    #[error("input '{name}': data does not match datatype {datatype}")]
    Data { name: String, datatype: DataType },
    /// The JSON form's values are not of the datatype's family.
    #[error("tensor '{name}': data does not match datatype {datatype}")]
    JsonData { name: String, datatype: DataType },
}

/// KServe v2 tensor datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The name as the protocol writes it (`FP32`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// The inclusive integer range of an integer type.
    fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            DataType::Uint8 => (0, u8::MAX.into()),
            DataType::Uint16 => (0, u16::MAX.into()),
            DataType::Uint32 => (0, u32::MAX.into()),
            DataType::Uint64 => (0, u64::MAX.into()),
            DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = TensorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| TensorError::UnknownDatatype(s.to_owned()))
    }
}

/// Row-major tensor contents, in the widest type of their family.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TensorData {
    Bool(Vec<bool>),
    Int(Vec<i128>),
    Float(Vec<f64>),
    Bytes(Vec<String>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Int(v) => v.len(),
            TensorData::Float(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<u64>,
    pub data: TensorData,
}

impl Tensor {
    /// Elements the shape holds, or `None` on overflow.
    pub fn shape_elements(shape: &[u64]) -> Option<u64> {
        shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d))
    }

    /// Check that the data fits the shape and the datatype.
    pub fn validate(&self) -> Result<(), TensorError> {
        let expected = Tensor::shape_elements(&self.shape)
            .ok_or_else(|| TensorError::TooLarge { name: self.name.clone(), shape: self.shape.clone() })?;
        if expected != self.data.len() as u64 {
            return Err(TensorError::Count {
                name: self.name.clone(),
                shape: self.shape.clone(),
                expected,
                given: self.data.len(),
            });
        }
        let fits = match (&self.data, self.datatype) {
            (TensorData::Bool(_), DataType::Bool) | (TensorData::Bytes(_), DataType::Bytes) => true,
            (TensorData::Float(v), DataType::Fp16 | DataType::Fp32 | DataType::Fp64) => {
                v.iter().all(|x| x.is_finite() || x.is_nan())
            }
            (TensorData::Int(v), dt) => match dt.int_range() {
                Some((lo, hi)) => v.iter().all(|x| (lo..=hi).contains(x)),
                None => matches!(dt, DataType::Fp16 | DataType::Fp32 | DataType::Fp64),
            },
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(TensorError::Data { name: self.name.clone(), datatype: self.datatype })
        }
    }
}

impl Tensor {
    /// The KServe v2 JSON form: `{"name", "datatype", "shape", "data"}`
    /// with flat row-major data.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let data = match &self.data {
            TensorData::Bool(v) => json!(v),
            TensorData::Int(v) => Value::Array(
                v.iter().map(|x| i64::try_from(*x).map_or_else(|_| json!(*x as u64), |i| json!(i))).collect(),
            ),
            TensorData::Float(v) => json!(v),
            TensorData::Bytes(v) => json!(v),
        };
        json!({ "name": self.name, "datatype": self.datatype.as_str(), "shape": self.shape, "data": data })
    }

    /// Read the KServe v2 JSON form (data flat or nested), checked against
    /// its shape and datatype.
    pub fn from_json(value: &serde_json::Value) -> Result<Tensor, TensorError> {
        use serde_json::Value;
        fn flat<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
            match v {
                Value::Array(items) => items.iter().for_each(|i| flat(i, out)),
                other => out.push(other),
            }
        }
        let name = value["name"].as_str().ok_or(TensorError::Missing("name"))?.to_owned();
        let datatype: DataType =
            value["datatype"].as_str().ok_or(TensorError::Missing("datatype"))?.parse()?;
        let shape = value["shape"]
            .as_array()
            .ok_or(TensorError::Missing("shape"))?
            .iter()
            .map(|d| d.as_u64().ok_or(TensorError::Dimension))
            .collect::<Result<Vec<u64>, _>>()?;
        let mut items = Vec::new();
        flat(&value["data"], &mut items);
        let bad = || TensorError::JsonData { name: name.clone(), datatype };
        let data = match datatype {
            DataType::Bool => {
                TensorData::Bool(items.iter().map(|v| v.as_bool()).collect::<Option<_>>().ok_or_else(bad)?)
            }
            DataType::Bytes => TensorData::Bytes(
                items.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<_>>().ok_or_else(bad)?,
            ),
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => {
                TensorData::Float(items.iter().map(|v| v.as_f64()).collect::<Option<_>>().ok_or_else(bad)?)
            }
            _ => TensorData::Int(
                items
                    .iter()
                    .map(|v| v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from)))
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
            ),
        };
        let tensor = Tensor { name, datatype, shape, data };
        tensor.validate()?;
        Ok(tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(datatype: DataType, shape: Vec<u64>, data: TensorData) -> Tensor {
        Tensor { name: "x".into(), datatype, shape, data }
    }

    #[test]
    fn validates_shape_and_range() {
        assert!(tensor(DataType::Fp32, vec![2, 2], TensorData::Float(vec![1.0; 4])).validate().is_ok());
        assert!(tensor(DataType::Fp32, vec![2, 2], TensorData::Int(vec![1; 4])).validate().is_ok());
        assert!(tensor(DataType::Fp32, vec![2, 3], TensorData::Float(vec![1.0; 4])).validate().is_err());
        assert!(tensor(DataType::Uint8, vec![1], TensorData::Int(vec![256])).validate().is_err());
        assert!(tensor(DataType::Int8, vec![1], TensorData::Int(vec![-128])).validate().is_ok());
        assert!(tensor(DataType::Bool, vec![1], TensorData::Int(vec![1])).validate().is_err());
        assert!(tensor(DataType::Fp32, vec![u64::MAX, 2], TensorData::Float(vec![])).validate().is_err());
        assert_eq!("FP32".parse::<DataType>(), Ok(DataType::Fp32));
        let t = tensor(DataType::Int64, vec![2, 2], TensorData::Int(vec![1, -2, 3, 4]));
        assert_eq!(Tensor::from_json(&t.to_json()), Ok(t));
        let nested =
            serde_json::json!({"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [[1.5], [2.0]]});
        assert_eq!(Tensor::from_json(&nested).unwrap().data, TensorData::Float(vec![1.5, 2.0]));
        let wrong = serde_json::json!({"name": "x", "datatype": "BOOL", "shape": [1], "data": [3]});
        assert!(Tensor::from_json(&wrong).is_err());
        assert!("fp32".parse::<DataType>().is_err());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let short = tensor(DataType::Fp32, vec![2, 3], TensorData::Float(vec![1.0; 4]));
        assert_eq!(
            short.validate().unwrap_err().to_string(),
            "input 'x': shape [2, 3] holds 6 elements but 4 were given"
        );
        let big = tensor(DataType::Uint8, vec![1], TensorData::Int(vec![256]));
        assert_eq!(big.validate().unwrap_err().to_string(), "input 'x': data does not match datatype UINT8");
        assert_eq!("fp32".parse::<DataType>().unwrap_err().to_string(), "unknown datatype \"fp32\"");
        let wrong = serde_json::json!({"name": "x", "datatype": "BOOL", "shape": [1], "data": [3]});
        assert_eq!(
            Tensor::from_json(&wrong).unwrap_err().to_string(),
            "tensor 'x': data does not match datatype BOOL"
        );
        let nameless = serde_json::json!({"datatype": "BOOL", "shape": [1], "data": [true]});
        assert_eq!(Tensor::from_json(&nameless).unwrap_err().to_string(), "a tensor needs a name");
    }
}

//! PyTorch `torch.save` checkpoints (`.pth` / `.pt`: a zip holding `data.pkl` and one stored,
//! uncompressed entry per storage), read without Python: the zip directory (zip64 included) and a
//! pickle interpreter that understands only what a saved state dict uses. Tensors become byte
//! ranges of the `.pth` file itself, so they can be memory-mapped and referenced in place like
//! safetensors. Format: <https://github.com/pytorch/pytorch/blob/main/torch/serialization.py>.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{ExportError, Result};
use crate::stored_dtype::StoredDtype;

/// One tensor found in a `.pth` file: where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PthTensor {
    /// State-dict key (nested dicts are joined with `.`).
    pub name: String,
    /// Element type.
    pub dtype: StoredDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Absolute byte offset in the `.pth` file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// True for the file names this module reads.
pub fn is_pth(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pth" | "pt")
    )
}

struct ZipEntry {
    method: u16,
    size: u64,
    local_header: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// The zip's central directory: name → entry.
fn zip_entries(bytes: &[u8]) -> std::result::Result<HashMap<String, ZipEntry>, String> {
    let search_from = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(bytes, i) == Some(0x0605_4b50))
        .ok_or("no end-of-central-directory record: not a zip file")?;
    let mut count = u16_at(bytes, eocd + 10).ok_or("truncated")? as u64;
    let mut directory = u32_at(bytes, eocd + 16).ok_or("truncated")? as u64;
    if eocd >= 20 && u32_at(bytes, eocd - 20) == Some(0x0706_4b50) {
        let record = u64_at(bytes, eocd - 20 + 8).ok_or("truncated zip64 locator")? as usize;
        if u32_at(bytes, record) != Some(0x0606_4b50) {
            return Err("bad zip64 end-of-central-directory record".into());
        }
        count = u64_at(bytes, record + 32).ok_or("truncated")?;
        directory = u64_at(bytes, record + 48).ok_or("truncated")?;
    }
    let mut entries = HashMap::new();
    let mut at = directory as usize;
    for _ in 0..count {
        if u32_at(bytes, at) != Some(0x0201_4b50) {
            return Err(format!("bad central directory entry at byte {at}"));
        }
        let method = u16_at(bytes, at + 10).ok_or("truncated")?;
        let mut size = u32_at(bytes, at + 20).ok_or("truncated")? as u64;
        let mut uncompressed = u32_at(bytes, at + 24).ok_or("truncated")? as u64;
        let name_length = u16_at(bytes, at + 28).ok_or("truncated")? as usize;
        let extra_length = u16_at(bytes, at + 30).ok_or("truncated")? as usize;
        let comment_length = u16_at(bytes, at + 32).ok_or("truncated")? as usize;
        let mut local_header = u32_at(bytes, at + 42).ok_or("truncated")? as u64;
        let name = bytes
            .get(at + 46..at + 46 + name_length)
            .ok_or("truncated")?;
        let name = String::from_utf8_lossy(name).to_string();
        let mut extra = at + 46 + name_length;
        let extra_end = extra + extra_length;
        while extra + 4 <= extra_end {
            let (id, length) = (
                u16_at(bytes, extra).ok_or("truncated")?,
                u16_at(bytes, extra + 2).ok_or("truncated")? as usize,
            );
            if id == 0x0001 {
                let mut field = extra + 4;
                for value in [&mut uncompressed, &mut size, &mut local_header] {
                    if *value == 0xFFFF_FFFF {
                        *value = u64_at(bytes, field).ok_or("truncated zip64 field")?;
                        field += 8;
                    }
                }
            }
            extra += 4 + length;
        }
        if method == 0 && size != uncompressed {
            return Err(format!(
                "stored entry `{name}` has sizes {size} and {uncompressed}"
            ));
        }
        entries.insert(
            name,
            ZipEntry {
                method,
                size,
                local_header,
            },
        );
        at = extra_end + comment_length;
    }
    Ok(entries)
}

/// Byte range of a stored (uncompressed) entry's data.
fn entry_data(bytes: &[u8], entry: &ZipEntry) -> std::result::Result<(u64, u64), String> {
    if entry.method != 0 {
        return Err(
            "compressed zip entries are not supported (torch.save stores them uncompressed)".into(),
        );
    }
    let at = entry.local_header as usize;
    if u32_at(bytes, at) != Some(0x0403_4b50) {
        return Err(format!("bad local header at byte {at}"));
    }
    let name_length = u16_at(bytes, at + 26).ok_or("truncated")? as u64;
    let extra_length = u16_at(bytes, at + 28).ok_or("truncated")? as u64;
    let start = entry.local_header + 30 + name_length + extra_length;
    if start
        .checked_add(entry.size)
        .is_none_or(|end| end > bytes.len() as u64)
    {
        return Err("entry runs past the end of the file".into());
    }
    Ok((start, entry.size))
}

#[derive(Debug, Clone)]
enum Object {
    Mark,
    None,
    Bool,
    Int(i64),
    Float,
    Text(String),
    Tuple(Vec<Object>),
    List(Vec<Object>),
    Dict(Vec<(Object, Object)>),
    Global(String, String),
    Storage {
        key: String,
        dtype: Option<StoredDtype>,
    },
    Tensor {
        key: String,
        dtype: Option<StoredDtype>,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    Opaque,
}

fn storage_dtype(class: &str) -> Option<StoredDtype> {
    match class {
        "FloatStorage" => Some(StoredDtype::F32),
        "HalfStorage" => Some(StoredDtype::F16),
        "BFloat16Storage" => Some(StoredDtype::BF16),
        "LongStorage" => Some(StoredDtype::I64),
        _ => None,
    }
}

fn integers(object: &Object) -> Option<Vec<usize>> {
    match object {
        Object::Tuple(items) | Object::List(items) => items
            .iter()
            .map(|i| {
                if let Object::Int(v) = i {
                    usize::try_from(*v).ok()
                } else {
                    None
                }
            })
            .collect(),
        _ => None,
    }
}

fn reduce(callable: Object, args: Object) -> Object {
    let Object::Global(module, name) = callable else {
        return Object::Opaque;
    };
    let Object::Tuple(args) = args else {
        return Object::Opaque;
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Object::Dict(Vec::new()),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            let (
                Some(Object::Storage { key, dtype }),
                Some(Object::Int(offset)),
                Some(shape),
                Some(stride),
            ) = (
                args.first(),
                args.get(1),
                args.get(2).and_then(integers),
                args.get(3).and_then(integers),
            )
            else {
                return Object::Opaque;
            };
            Object::Tensor {
                key: key.clone(),
                dtype: *dtype,
                offset: *offset as usize,
                shape,
                stride,
            }
        }
        _ => Object::Opaque,
    }
}

/// Containers nest at most this deep (a state dict needs 4); deeper input is refused before it
/// can overflow the stack in clone, drop or traversal.
const MAX_DEPTH: usize = 32;
/// Objects that memo references may copy: a base plus a multiple of the pickle's size (a state
/// dict copies a few small objects per tensor; a "memo bomb" doubles a list per 7 bytes).
const COPY_BUDGET_BASE: usize = 1 << 18;
const COPY_BUDGET_PER_BYTE: usize = 16;
/// Opcodes the interpreter runs, each creating at most one object: a state dict takes a few dozen
/// per tensor, so this bounds the objects alive at once (and their memory) far above any real one.
const MAX_OPCODES: usize = 1 << 20;
/// Bytes of text (strings, names) the interpreter may hold, memo copies included.
const MAX_TEXT_BYTES: usize = 1 << 28;

/// Bytes of text in `object` (strings and names; containers counted through).
fn text_bytes(object: &Object) -> usize {
    match object {
        Object::Text(text) => text.len(),
        Object::Global(module, name) => module.len() + name.len(),
        Object::Storage { key, .. } | Object::Tensor { key, .. } => key.len(),
        Object::Tuple(items) | Object::List(items) => items.iter().map(text_bytes).sum(),
        Object::Dict(pairs) => pairs
            .iter()
            .map(|(key, value)| text_bytes(key) + text_bytes(value))
            .sum(),
        _ => 0,
    }
}

/// Nodes in `object`, counting no further than `limit` (+1).
fn count_nodes(object: &Object, limit: usize) -> usize {
    let mut count = 1;
    let visit = |child: &Object, count: &mut usize| {
        if *count <= limit {
            *count += count_nodes(child, limit - *count);
        }
    };
    match object {
        Object::Tuple(items) | Object::List(items) => {
            items.iter().for_each(|item| visit(item, &mut count))
        }
        Object::Dict(pairs) => pairs.iter().for_each(|(key, value)| {
            visit(key, &mut count);
            visit(value, &mut count);
        }),
        _ => {}
    }
    count
}

/// Whether containers inside `object` nest deeper than `levels`.
fn deeper_than(object: &Object, levels: usize) -> bool {
    let is_container =
        |o: &Object| matches!(o, Object::Tuple(_) | Object::List(_) | Object::Dict(_));
    let children: Vec<&Object> = match object {
        Object::Tuple(items) | Object::List(items) => items.iter().collect(),
        Object::Dict(pairs) => pairs.iter().flat_map(|(key, value)| [key, value]).collect(),
        _ => return false,
    };
    match levels {
        0 => children.into_iter().any(is_container),
        _ => children
            .into_iter()
            .any(|child| deeper_than(child, levels - 1)),
    }
}

/// `items`, about to go into a container; refused if that would nest deeper than [`MAX_DEPTH`].
fn nested(items: Vec<Object>) -> std::result::Result<Vec<Object>, String> {
    if items.iter().any(|item| deeper_than(item, MAX_DEPTH - 1)) {
        return Err(format!(
            "containers nest deeper than {MAX_DEPTH} levels; not a state dict"
        ));
    }
    Ok(items)
}

/// Runs the pickle program `data` (protocols 2–5, the opcodes `torch.save` emits for a state dict).
fn unpickle(data: &[u8]) -> std::result::Result<Object, String> {
    let mut stack: Vec<Object> = Vec::new();
    let mut memo: HashMap<u64, Object> = HashMap::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> std::result::Result<&[u8], String> {
        let slice = data
            .get(*at..at.checked_add(n).ok_or("pickle ends early")?)
            .ok_or("pickle ends early")?;
        *at += n;
        Ok(slice)
    };
    let pop_mark = |stack: &mut Vec<Object>| -> std::result::Result<Vec<Object>, String> {
        let mark = stack
            .iter()
            .rposition(|o| matches!(o, Object::Mark))
            .ok_or("MARK missing")?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Ok(items)
    };
    let pop = |stack: &mut Vec<Object>| {
        stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    };
    let mut copy_budget =
        COPY_BUDGET_BASE.saturating_add(COPY_BUDGET_PER_BYTE.saturating_mul(data.len()));
    let text_budget = std::cell::Cell::new(MAX_TEXT_BYTES);
    let spend_text = |bytes: usize| -> std::result::Result<(), String> {
        text_budget.set(text_budget.get().checked_sub(bytes).ok_or(format!(
            "the pickle holds more than {MAX_TEXT_BYTES} bytes of text; a state dict holds names only"
        ))?);
        Ok(())
    };
    let mut copy = |object: &Object| -> std::result::Result<Object, String> {
        let nodes = count_nodes(object, copy_budget);
        copy_budget = copy_budget
            .checked_sub(nodes)
            .ok_or("the pickle copies more objects than a state dict holds (memo bomb?)")?;
        spend_text(text_bytes(object))?;
        Ok(object.clone())
    };
    let mut opcodes = 0usize;
    loop {
        opcodes += 1;
        if opcodes > MAX_OPCODES {
            return Err(format!(
                "the pickle runs more than {MAX_OPCODES} opcodes; a state dict needs a few dozen per tensor"
            ));
        }
        let opcode = *take(&mut at, 1)?.first().expect("one byte");
        match opcode {
            0x80 => {
                take(&mut at, 1)?;
            }
            0x95 => {
                take(&mut at, 8)?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Object::Mark),
            b'N' => stack.push(Object::None),
            0x88 | 0x89 => stack.push(Object::Bool),
            b'K' => stack.push(Object::Int(take(&mut at, 1)?[0] as i64)),
            b'M' => {
                let b = take(&mut at, 2)?;
                stack.push(Object::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
            }
            b'J' => {
                let b = take(&mut at, 4)?;
                stack.push(Object::Int(
                    i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
                ));
            }
            0x8a => {
                let n = take(&mut at, 1)?[0] as usize;
                let b = take(&mut at, n)?;
                if n > 8 {
                    return Err("LONG1 wider than 64 bits".into());
                }
                let mut buffer = if b.last().is_some_and(|x| x & 0x80 != 0) {
                    [0xFF; 8]
                } else {
                    [0; 8]
                };
                buffer[..n].copy_from_slice(b);
                stack.push(Object::Int(i64::from_le_bytes(buffer)));
            }
            b'G' => {
                take(&mut at, 8)?;
                stack.push(Object::Float);
            }
            b'X' | 0x8c | 0x8d | b'U' | b'T' | b'B' | b'C' => {
                let n = match opcode {
                    0x8c | b'U' | b'C' => take(&mut at, 1)?[0] as usize,
                    0x8d => {
                        u64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes")) as usize
                    }
                    _ => {
                        let b = take(&mut at, 4)?;
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
                    }
                };
                let b = take(&mut at, n)?;
                spend_text(b.len())?;
                stack.push(Object::Text(String::from_utf8_lossy(b).to_string()));
            }
            b'c' => {
                let end = data[at..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .ok_or("GLOBAL without newline")?;
                let module = String::from_utf8_lossy(&data[at..at + end]).to_string();
                at += end + 1;
                let end = data[at..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .ok_or("GLOBAL without newline")?;
                let name = String::from_utf8_lossy(&data[at..at + end]).to_string();
                at += end + 1;
                spend_text(module.len() + name.len())?;
                stack.push(Object::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                let (Object::Text(module), Object::Text(name)) = (module, name) else {
                    return Err("STACK_GLOBAL of non-strings".into());
                };
                stack.push(Object::Global(module, name));
            }
            b')' => stack.push(Object::Tuple(Vec::new())),
            b't' => {
                let items = nested(pop_mark(&mut stack)?)?;
                stack.push(Object::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (opcode - 0x84) as usize;
                if stack.len() < n {
                    return Err("pickle stack underflow".into());
                }
                let items = nested(stack.split_off(stack.len() - n))?;
                stack.push(Object::Tuple(items));
            }
            b']' => stack.push(Object::List(Vec::new())),
            b'l' => {
                let items = nested(pop_mark(&mut stack)?)?;
                stack.push(Object::List(items));
            }
            b'}' => stack.push(Object::Dict(Vec::new())),
            b'd' => {
                let items = nested(pop_mark(&mut stack)?)?;
                let pairs = items
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                stack.push(Object::Dict(pairs));
            }
            b'a' | b'e' => {
                let items = nested(if opcode == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                })?;
                if let Some(Object::List(list)) = stack.last_mut() {
                    list.extend(items);
                }
            }
            b's' | b'u' => {
                let items = if opcode == b's' {
                    let value = pop(&mut stack)?;
                    let key = pop(&mut stack)?;
                    vec![key, value]
                } else {
                    pop_mark(&mut stack)?
                };
                let items = nested(items)?;
                match stack.last_mut() {
                    Some(Object::Dict(dict)) => {
                        dict.extend(items.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())))
                    }
                    _ => return Err("SETITEM(S) on a non-dict".into()),
                }
            }
            b'q' => {
                let key = take(&mut at, 1)?[0] as u64;
                memo.insert(key, copy(stack.last().ok_or("memo of an empty stack")?)?);
            }
            b'r' => {
                let b = take(&mut at, 4)?;
                memo.insert(
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64,
                    copy(stack.last().ok_or("memo of an empty stack")?)?,
                );
            }
            0x94 => {
                let key = memo.len() as u64;
                memo.insert(key, copy(stack.last().ok_or("memo of an empty stack")?)?);
            }
            b'h' => {
                let key = take(&mut at, 1)?[0] as u64;
                stack.push(copy(memo.get(&key).ok_or("unknown memo key")?)?);
            }
            b'j' => {
                let b = take(&mut at, 4)?;
                stack.push(copy(
                    memo.get(&(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64))
                        .ok_or("unknown memo key")?,
                )?);
            }
            b'Q' => {
                let id = pop(&mut stack)?;
                let Object::Tuple(parts) = id else {
                    return Err("persistent id is not a tuple".into());
                };
                let storage = match (parts.first(), parts.get(1), parts.get(2)) {
                    (
                        Some(Object::Text(kind)),
                        Some(Object::Global(_, class)),
                        Some(Object::Text(key)),
                    ) if kind == "storage" => Object::Storage {
                        key: key.clone(),
                        dtype: storage_dtype(class),
                    },
                    _ => return Err("unsupported persistent id (not a tensor storage)".into()),
                };
                stack.push(storage);
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args));
            }
            0x81 => {
                pop(&mut stack)?;
                pop(&mut stack)?;
                stack.push(Object::Opaque);
            }
            b'b' => {
                pop(&mut stack)?;
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    at - 1
                ));
            }
        }
    }
}

fn collect(object: &Object, prefix: &str, out: &mut Vec<(String, Object)>) {
    if let Object::Dict(pairs) = object {
        for (key, value) in pairs {
            let key = match key {
                Object::Text(k) => k.clone(),
                Object::Int(i) => i.to_string(),
                _ => continue,
            };
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Object::Tensor { .. } => out.push((name, value.clone())),
                Object::Dict(_) => collect(value, &name, out),
                _ => {}
            }
        }
    }
}

/// Lists the tensors of a `torch.save` file held in `bytes` (the mapped `path`).
pub fn read_index(bytes: &[u8], path: &Path) -> Result<Vec<PthTensor>> {
    let corrupt = |reason: String| ExportError::CorruptSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let entries = zip_entries(bytes).map_err(|e| corrupt(format!("not a torch.save zip: {e}")))?;
    let (pickle_name, pickle) = entries
        .iter()
        .find(|(name, _)| name.ends_with("data.pkl") && name.matches('/').count() == 1)
        .ok_or_else(|| corrupt("no `*/data.pkl` in the archive (legacy non-zip torch.save files are not supported)".into()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let (start, length) = entry_data(bytes, pickle).map_err(corrupt)?;
    let root = unpickle(&bytes[start as usize..(start + length) as usize])
        .map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    let mut found = Vec::new();
    collect(&root, "", &mut found);
    let mut tensors = Vec::with_capacity(found.len());
    for (name, tensor) in found {
        let Object::Tensor {
            key,
            dtype,
            offset,
            shape,
            stride,
        } = tensor
        else {
            continue;
        };
        let dtype = dtype.ok_or_else(|| ExportError::WrongDtype {
            name: name.clone(),
            dtype: "an unsupported torch storage type".into(),
        })?;
        let impossible = || {
            corrupt(format!(
                "tensor `{name}` has an impossible size (shape {shape:?}, storage offset {offset})"
            ))
        };
        let mut expected = 1usize;
        for (dim, step) in shape.iter().zip(&stride).rev() {
            if *dim > 1 && *step != expected {
                return Err(corrupt(format!(
                    "tensor `{name}` is not contiguous (shape {shape:?}, stride {stride:?}); re-save it with .contiguous()"
                )));
            }
            expected = expected.checked_mul(*dim).ok_or_else(impossible)?;
        }
        let entry = entries
            .get(&format!("{prefix}data/{key}"))
            .ok_or_else(|| corrupt(format!("storage {key} of `{name}` is missing")))?;
        let (data_start, data_length) = entry_data(bytes, entry).map_err(corrupt)?;
        let element = dtype.size() as u64;
        let count = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(impossible)?;
        let begin = (offset as u64)
            .checked_mul(element)
            .ok_or_else(impossible)?;
        let length = count.checked_mul(element).ok_or_else(impossible)?;
        if begin
            .checked_add(length)
            .is_none_or(|end| end > data_length)
        {
            return Err(corrupt(format!("tensor `{name}` runs past its storage")));
        }
        tensors.push(PthTensor {
            name,
            dtype,
            shape,
            offset: data_start + begin,
            length,
        });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pickle_that_pushes_millions_of_items_is_refused() {
        let mut program = b"\x80\x02".to_vec();
        program.extend(std::iter::repeat_n(b'N', MAX_OPCODES + 1));
        program.push(b'.');
        let error = unpickle(&program).unwrap_err();
        assert!(error.contains("more than 1048576 opcodes"), "{error}");
    }

    #[test]
    fn a_pickle_that_copies_a_long_text_is_refused() {
        let text = vec![b'x'; 1 << 16];
        let mut program = b"\x80\x02X".to_vec();
        program.extend((text.len() as u32).to_le_bytes());
        program.extend(&text);
        program.extend(b"q\x00");
        program.extend(b"h\x00".repeat(5000));
        program.push(b'.');
        let error = unpickle(&program).unwrap_err();
        assert!(error.contains("bytes of text"), "{error}");
    }
}

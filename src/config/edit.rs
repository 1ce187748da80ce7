//! Changing `config.yaml` safely: the edited document is validated as a whole before anything is
//! written; an invalid result is refused and the file is left byte for byte as it was. A valid
//! one replaces the file atomically (temporary file, fsync, rename) with the file's own
//! permissions, after the previous version is kept as `config.yaml.bak`.
//!
//! Keys keep their order. Comments are not kept: the file is rewritten from its parsed form.

use std::fs;
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::config::Config;
use crate::error::Error;
use crate::files::{MODE_SECRET, write_atomic};

pub struct ConfigFile {
    path: PathBuf,
    original: String,
    pub doc: Value,
}

impl ConfigFile {
    pub fn open(path: &Path) -> Result<ConfigFile, Error> {
        let original = fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let doc: Value = serde_norway::from_str(&original).map_err(|e| Error::ConfigInvalid {
            path: path.to_owned(),
            problems: vec![e.to_string()],
        })?;
        if !doc.is_mapping() {
            return Err(Error::ConfigInvalid {
                path: path.to_owned(),
                problems: vec!["the file is not a YAML mapping".to_owned()],
            });
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            original,
            doc,
        })
    }

    /// The `apis` list, created if missing.
    pub fn apis(&mut self) -> Result<&mut Vec<Value>, Error> {
        let root = self
            .doc
            .as_mapping_mut()
            .ok_or_else(|| Error::Refused("the config is not a YAML mapping".to_owned()))?;
        let apis = root
            .entry(Value::from("apis"))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        apis.as_sequence_mut()
            .ok_or_else(|| Error::Refused("`apis` in the config is not a list".to_owned()))
    }

    /// Index of the entry named `selector`, or numbered so (from 1, as `api list` shows).
    pub fn find(&mut self, selector: &str) -> Result<usize, Error> {
        let apis = self.apis()?;
        let by_name = apis
            .iter()
            .position(|a| a.get("name").and_then(Value::as_str) == Some(selector));
        let by_number = selector
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=apis.len()).contains(n))
            .map(|n| n - 1);
        by_name.or(by_number).ok_or_else(|| {
            let names: Vec<&str> = apis
                .iter()
                .filter_map(|a| a.get("name").and_then(Value::as_str))
                .collect();
            Error::Refused(format!(
                "no entry named or numbered {selector:?}; entries: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    /// The mapping of entry `index`.
    pub fn entry(&mut self, index: usize) -> Result<&mut Mapping, Error> {
        self.apis()?
            .get_mut(index)
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| Error::Refused(format!("entry {} is not a mapping", index + 1)))
    }

    /// Validates the edited document; if valid, keeps the old file as `.bak` and writes the new
    /// one atomically. Returns the validated config.
    pub fn save(self) -> Result<Config, Error> {
        let text = serde_norway::to_string(&self.doc)
            .map_err(|e| Error::Refused(format!("cannot write YAML: {e}")))?;
        let base = self.path.parent().unwrap_or_else(|| Path::new("."));
        let config = Config::from_yaml(&text, base).map_err(|problems| Error::EditRefused {
            path: self.path.clone(),
            problems,
        })?;
        // A config may hold API keys: never widen its permissions, not even for the backup.
        let mode = crate::files::mode_of(&self.path).unwrap_or(MODE_SECRET);
        let backup = backup_path(&self.path);
        write_atomic(&backup, self.original.as_bytes(), mode).map_err(|source| Error::FileIo {
            path: backup.clone(),
            source,
        })?;
        write_atomic(&self.path, text.as_bytes(), mode).map_err(|source| Error::FileIo {
            path: self.path.clone(),
            source,
        })?;
        Ok(config)
    }
}

pub fn backup_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.yaml".to_owned());
    path.with_file_name(format!("{name}.bak"))
}

/// `null`/`true`/`false` from the command line, as YAML.
pub fn stream_mode_value(text: &str) -> Result<Value, Error> {
    match text.trim().to_ascii_lowercase().as_str() {
        "null" | "none" | "" => Ok(Value::Null),
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        other => Err(Error::Usage(format!(
            "--stream-mode takes null, true or false, not {other:?}"
        ))),
    }
}

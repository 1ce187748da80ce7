//! `trae-proxy api list|add|update|remove|enable|disable`: the `apis` entries, addressed by
//! name or by their number in `api list` (from 1). Edits change only what they are told to
//! (the original's `update` deactivated an entry unless `--active` was repeated) and go through
//! [`ConfigFile::save`]: validated first, written atomically, previous file kept as `.bak`.

use crate::output::say;
use serde_norway::{Mapping, Value};

use crate::cli::{ApiAction, ApiArgs};
use crate::config::edit::{ConfigFile, stream_mode_value};
use crate::config::{CATCH_ALL, Config, TargetModel};
use crate::error::Error;

pub fn run(args: &ApiArgs) -> Result<(), Error> {
    let path = args.config().map_err(Error::Usage)?;
    match &args.action {
        ApiAction::List(_) => list(&Config::load(&path)?),
        ApiAction::Add(a) => {
            let mut file = ConfigFile::open(&path)?;
            let target = a
                .target_model_id
                .clone()
                .unwrap_or_else(|| a.custom_model_id.clone());
            let mut entry = Mapping::new();
            entry.insert("name".into(), a.name.clone().into());
            entry.insert("endpoint".into(), a.endpoint.clone().into());
            entry.insert("custom_model_id".into(), a.custom_model_id.clone().into());
            entry.insert("target_model_id".into(), target.into());
            entry.insert(
                "stream_mode".into(),
                stream_mode_value(a.stream_mode.as_deref().unwrap_or("null"))?,
            );
            entry.insert("active".into(), Value::Bool(!a.inactive));
            if let Some(w) = a.weight {
                entry.insert("weight".into(), w.into());
            }
            if let Some(var) = &a.api_key_env {
                entry.insert("api_key_env".into(), var.clone().into());
            }
            file.apis()?.push(Value::Mapping(entry));
            let config = file.save()?;
            say!("added {:?} (entry {})", a.name, config.backends.len());
            Ok(())
        }
        ApiAction::Update(u) => {
            let mut file = ConfigFile::open(&path)?;
            let index = file.find(&u.entry)?;
            let entry = file.entry(index)?;
            let mut set = |key: &str, value: Option<Value>| {
                if let Some(v) = value {
                    entry.insert(key.into(), v);
                }
            };
            set("name", u.name.clone().map(Value::from));
            set("endpoint", u.endpoint.clone().map(Value::from));
            set(
                "custom_model_id",
                u.custom_model_id.clone().map(Value::from),
            );
            set(
                "target_model_id",
                u.target_model_id.clone().map(Value::from),
            );
            set(
                "stream_mode",
                u.stream_mode
                    .as_deref()
                    .map(stream_mode_value)
                    .transpose()?,
            );
            set("weight", u.weight.map(Value::from));
            set("api_key_env", u.api_key_env.clone().map(Value::from));
            file.save()?;
            say!("updated entry {}", index + 1);
            Ok(())
        }
        ApiAction::Remove(r) => {
            let mut file = ConfigFile::open(&path)?;
            let index = file.find(&r.entry)?;
            let apis = file.apis()?;
            if apis.len() == 1 {
                return Err(Error::Refused(format!(
                    "{:?} is the last entry; add another first, or switch it off with `api disable`",
                    r.entry
                )));
            }
            apis.remove(index);
            file.save()?;
            say!("removed entry {}", index + 1);
            Ok(())
        }
        ApiAction::Enable(e) => {
            let mut file = ConfigFile::open(&path)?;
            let index = file.find(&e.entry)?;
            for (i, api) in file.apis()?.iter_mut().enumerate() {
                if let Some(map) = api.as_mapping_mut() {
                    if i == index {
                        map.insert("active".into(), Value::Bool(true));
                    } else if e.only {
                        map.insert("active".into(), Value::Bool(false));
                    }
                }
            }
            file.save()?;
            say!(
                "enabled entry {}{}",
                index + 1,
                if e.only {
                    "; every other entry disabled"
                } else {
                    ""
                }
            );
            Ok(())
        }
        ApiAction::Disable(d) => {
            let mut file = ConfigFile::open(&path)?;
            let index = file.find(&d.entry)?;
            file.entry(index)?
                .insert("active".into(), Value::Bool(false));
            file.save()?;
            say!("disabled entry {}", index + 1);
            Ok(())
        }
    }
}

fn list(config: &Config) -> Result<(), Error> {
    let rows: Vec<[String; 5]> = config
        .backends
        .iter()
        .map(|b| {
            let target = match &b.target {
                TargetModel::Fixed(t) => t.clone(),
                TargetModel::Passthrough if b.custom_model_id == CATCH_ALL => {
                    "(as asked)".to_owned()
                }
                TargetModel::Passthrough => b.custom_model_id.clone(),
            };
            [
                b.name.clone(),
                format!("{} -> {target}", b.custom_model_id),
                b.stream_mode.to_string(),
                if b.active { "yes" } else { "no" }.to_owned(),
                crate::config::redact_url(&b.endpoint).into_owned(),
            ]
        })
        .collect();
    let header = [
        "name",
        "model -> backend model",
        "stream",
        "active",
        "endpoint",
    ];
    // Each column as wide as its widest cell (in characters: names may be CJK or accented).
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |number: &str, cells: [&str; 5]| {
        let mut text = format!("{number:>3}");
        for (cell, width) in cells.iter().zip(widths).take(4) {
            text.push_str(&format!("  {cell:<width$}"));
        }
        text.push_str("  ");
        text.push_str(cells[4]);
        say!("{text}");
    };
    line("#", header);
    for (i, row) in rows.iter().enumerate() {
        line(&(i + 1).to_string(), row.each_ref().map(String::as_str));
    }
    Ok(())
}

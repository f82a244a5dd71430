//! Deserializers for settings whose environment form is text the type does
//! not parse by itself; a field opts in with `#[serde(deserialize_with)]`.
//! (Lists whose default is a list are split on commas without this.)

use serde::de::{Deserialize, Deserializer, Error};

/// `Option<Vec<String>>` from a list (TOML, flags) or comma-separated text
/// (environment): `"a, b"` is `["a", "b"]`.
pub fn optional_comma_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(
        Option::<Form>::deserialize(deserializer)?.map(|form| match form {
            Form::List(items) => items,
            Form::Text(text) => text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
                .collect(),
        }),
    )
}

/// `Option<u64>` from a number or text in decimal or `0x` hex (chain ids are
/// often written in hex).
pub fn optional_decimal_or_hex<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Form {
        Number(u64),
        Text(String),
    }
    match Option::<Form>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Form::Number(number)) => Ok(Some(number)),
        Some(Form::Text(text)) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.map(Some).map_err(|error| {
                D::Error::custom(format!(
                    "{text:?} is not a number (decimal or 0x hex): {error}"
                ))
            })
        }
    }
}

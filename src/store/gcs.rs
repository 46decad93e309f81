//! GCS specifics of the environment's options.

/// A GCS service-account key that disables OAuth (an emulator's) needs no signing fields, but
/// `object_store` requires them to parse it: the missing ones are filled with placeholders, so
/// `{"disable_oauth": true, "gcs_base_url": "http://…"}` is a whole key. Any other key is
/// passed as it is.
pub(super) fn emulator_key(key: String) -> String {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str::<serde_json::Value>(&key) else {
        return key;
    };
    if m.get("disable_oauth") != Some(&serde_json::Value::Bool(true)) {
        return key;
    }
    for (field, placeholder) in [
        ("private_key", "unused: OAuth is disabled"),
        ("private_key_id", "unused"),
        ("client_email", "emulator@example.invalid"),
    ] {
        m.entry(field).or_insert_with(|| placeholder.into());
    }
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::emulator_key;

    #[test]
    fn an_emulator_key_is_completed_and_a_real_one_left_alone() {
        let full: serde_json::Value = serde_json::from_str(&emulator_key(
            r#"{"disable_oauth": true, "gcs_base_url": "http://127.0.0.1:1"}"#.into(),
        ))
        .unwrap();
        for f in ["private_key", "private_key_id", "client_email", "gcs_base_url"] {
            assert!(full[f].is_string(), "{f}: {full}");
        }
        let real = r#"{"private_key": "k", "client_email": "a@b"}"#.to_string();
        assert_eq!(emulator_key(real.clone()), real);
        let mine = r#"{"disable_oauth": true, "private_key": "mine"}"#.to_string();
        let v: serde_json::Value = serde_json::from_str(&emulator_key(mine)).unwrap();
        assert_eq!(v["private_key"], "mine", "a field given is kept");
        assert_eq!(emulator_key("not json".into()), "not json");
    }
}

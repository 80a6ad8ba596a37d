//! docker-compose.yml as the tests read it: with a real YAML parser
//! (serde_norway), its scalars as a process would see them, and what each
//! image is built from.

pub use serde_norway::Value as Yaml;

/// The repository's docker-compose.yml.
pub fn file() -> Yaml {
    serde_norway::from_str(&super::read_repo_file("docker-compose.yml"))
        .expect("docker-compose.yml")
}

/// A YAML scalar as the string a process would see in its environment.
pub fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// `environment:` as a map or as a list of `NAME=value`.
pub fn env(environment: &Yaml) -> Vec<(String, String)> {
    match environment {
        Yaml::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Yaml::Sequence(list) => list
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The `build.args` of the service that builds `image`, if one does.
pub fn build_args<'a>(compose: &'a Yaml, image: &str) -> Option<&'a Yaml> {
    compose["services"]
        .as_mapping()?
        .values()
        .find(|s| s.get("build").is_some() && s["image"].as_str() == Some(image))
        .map(|s| &s["build"]["args"])
}

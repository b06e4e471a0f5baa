//! The control catalog (`compliance/controls.yaml`): the PCI DSS v4.0 requirements this software
//! can evidence, the scenarios that evidence each, and those judged organisational.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// The standard and version (`PCI DSS v4.0`).
    pub standard: String,
    /// Requirements in software scope.
    pub requirements: Vec<Requirement>,
    /// Requirements out of software scope, with the reason.
    #[serde(default)]
    pub organisational: Vec<OutOfScope>,
}

/// A requirement the software evidences.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requirement {
    /// Requirement number (`3.4.1`); scenarios carry the tag `@pci-<id>`.
    pub id: String,
    /// Principal requirement (`3`); scenarios carry `@pci-req-<n>`.
    pub principal: u8,
    /// Short title.
    pub title: String,
    /// Summary of the requirement text.
    pub text: String,
    /// Kinds of evidence the scenarios capture (api, database, logs, tls, internal-call, …).
    pub evidence: Vec<String>,
    /// Names of the scenarios that evidence it.
    pub scenarios: Vec<String>,
    /// How this software meets it, for the assessor.
    #[serde(default)]
    pub implementation: Option<String>,
}

/// A requirement outside software scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutOfScope {
    /// Requirement number or range.
    pub id: String,
    /// Short title.
    pub title: String,
    /// Why software cannot evidence it.
    pub reason: String,
}

/// Errors loading the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Unreadable file.
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    /// Invalid YAML.
    #[error("{0} is not a valid control catalog: {1}")]
    Parse(String, String),
}

impl Catalog {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| CatalogError::Read(path.display().to_string(), e.to_string()))?;
        serde_yaml_ng::from_str(&text).map_err(|e| CatalogError::Parse(path.display().to_string(), e.to_string()))
    }

    /// The requirement with `id`.
    pub fn requirement(&self, id: &str) -> Option<&Requirement> {
        self.requirements.iter().find(|r| r.id == id)
    }
}

/// The requirement ids a scenario's tags name (`pci-3.4.1` → `3.4.1`; `pci-req-3` is the
/// principal requirement and not an id).
pub fn requirement_ids<S: AsRef<str>>(tags: &[S]) -> Vec<String> {
    let mut ids: Vec<String> = tags
        .iter()
        .map(|t| t.as_ref().trim_start_matches('@'))
        .filter_map(|t| t.strip_prefix("pci-"))
        .filter(|t| !t.starts_with("req-"))
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_requirements() {
        assert_eq!(
            requirement_ids(&["pci-3.4.1", "@pci-req-3", "pending", "pci-10.2.1"]),
            vec!["10.2.1".to_owned(), "3.4.1".to_owned()]
        );
    }
}

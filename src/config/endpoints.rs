//! The AOS endpoint tables (`shared/aos-api.md`): identity service per environment, Graph host
//! per data center, and which hosts each environment's tokens are valid on.

/// One AOS environment: its identity service and, where it has exactly one, its Graph host.
struct Environment {
    name: &'static str,
    token_url: &'static str,
    /// `Some` for gov, aos2 and fedramp: their tokens are valid only on that host.
    graph_host: Option<&'static str>,
}

const ENVIRONMENTS: &[Environment] = &[
    Environment {
        name: "commercial",
        token_url: "https://identity.avepointonlineservices.com/connect/token",
        graph_host: None,
    },
    Environment {
        name: "gov",
        token_url: "https://identity-gov.avepointonlineservices.com/connect/token",
        graph_host: Some("graph-gov.avepointonlineservices.com"),
    },
    Environment {
        name: "aos2",
        token_url: "https://identity-aos2.avepointonlineservices.com/connect/token",
        graph_host: Some("graph-aos2.avepointonlineservices.com"),
    },
    Environment {
        name: "fedramp",
        token_url: "https://identity.online15.net/connect/token",
        graph_host: Some("graphusgovapi.online15.net"),
    },
];

/// Commercial data centers (`api.region`) and their Graph hosts.
const COMMERCIAL_REGIONS: &[(&str, &str)] = &[
    ("au", "graph-au.avepointonlineservices.com"),
    ("sg", "graph-sg.avepointonlineservices.com"),
    ("ca", "graph-ca.avepointonlineservices.com"),
    ("ne", "graph-ne.avepointonlineservices.com"),
    ("we", "graph-we.avepointonlineservices.com"),
    ("fr", "graph-fr.avepointonlineservices.com"),
    ("de", "graph-de.avepointonlineservices.com"),
    ("jp", "graph-jp.avepointonlineservices.com"),
    ("kr", "graph-kr.avepointonlineservices.com"),
    ("ch", "graph-ch.avepointonlineservices.com"),
    ("uk", "graph-uk.avepointonlineservices.com"),
    ("us", "graph-us.avepointonlineservices.com"),
    ("uae", "graph-uae.avepointonlineservices.com"),
    ("za", "graph-za.avepointonlineservices.com"),
    ("qa", "graph-qa.avepointonlineservices.com"),
    ("gcp-au", "graph-gcp-au.avepointonlineservices.com"),
    ("gcp-jp", "graph-gcp-jp.avepointonlineservices.com"),
    ("gcp-us", "graph-gcp-us.avepointonlineservices.com"),
    ("gcp-we", "graph-gcp-we.avepointonlineservices.com"),
    ("gcp-kr", "graph-gcp-kr.avepointonlineservices.com"),
];

/// Region names of the environment-specific hosts, accepted as `api.region` too.
const ENVIRONMENT_REGIONS: &[(&str, &str)] = &[("gov", "gov"), ("aos2", "aos2"), ("fedramp", "fedramp")];

/// Every environment name, for error messages.
pub fn environment_names() -> String {
    ENVIRONMENTS.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// Every `api.region` value, for error messages and docs.
pub fn region_names() -> String {
    COMMERCIAL_REGIONS
        .iter()
        .map(|r| r.0)
        .chain(ENVIRONMENT_REGIONS.iter().map(|r| r.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Identity service token URL of `environment`.
pub fn token_url_for(environment: &str) -> Option<&'static str> {
    ENVIRONMENTS.iter().find(|e| e.name == environment).map(|e| e.token_url)
}

/// Why a region cannot be used with an environment.
#[derive(Debug, PartialEq, Eq)]
pub enum RegionError {
    /// Not a known data center.
    Unknown,
    /// A known region whose host does not accept the environment's tokens.
    Contradicts {
        /// The Graph host on which the environment's tokens are valid.
        environment_host: &'static str,
    },
}

/// The Graph host for `region` under `environment`. `region = None` means "not set": gov,
/// aos2 and fedramp then pick their own host, commercial defaults to `us`.
pub fn graph_host(environment: &str, region: Option<&str>) -> Result<&'static str, RegionError> {
    let env_host = ENVIRONMENTS.iter().find(|e| e.name == environment).and_then(|e| e.graph_host);
    let region_host = match region {
        None => None,
        Some(r) => Some(
            COMMERCIAL_REGIONS
                .iter()
                .find(|c| c.0 == r)
                .map(|c| c.1)
                .or_else(|| {
                    ENVIRONMENT_REGIONS
                        .iter()
                        .find(|c| c.0 == r)
                        .and_then(|c| ENVIRONMENTS.iter().find(|e| e.name == c.1))
                        .and_then(|e| e.graph_host)
                })
                .ok_or(RegionError::Unknown)?,
        ),
    };
    match (env_host, region_host) {
        (Some(e), Some(r)) if e != r => Err(RegionError::Contradicts { environment_host: e }),
        (Some(e), _) => Ok(e),
        (None, Some(r)) => {
            // A commercial token is not valid on a gov/aos2/fedramp host either.
            if ENVIRONMENTS.iter().any(|e| e.graph_host == Some(r)) {
                return Err(RegionError::Contradicts {
                    environment_host: "graph-us.avepointonlineservices.com",
                });
            }
            Ok(r)
        }
        (None, None) => Ok("graph-us.avepointonlineservices.com"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_three_hosts_are_reachable() {
        let mut hosts: Vec<&str> = COMMERCIAL_REGIONS.iter().map(|r| r.1).collect();
        for env in ["gov", "aos2", "fedramp"] {
            hosts.push(graph_host(env, None).unwrap());
        }
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 23);
        assert_eq!(
            graph_host("commercial", Some("uae")).unwrap(),
            "graph-uae.avepointonlineservices.com"
        );
        assert_eq!(
            graph_host("commercial", Some("gcp-au")).unwrap(),
            "graph-gcp-au.avepointonlineservices.com"
        );
    }

    #[test]
    fn environments_pick_their_own_host() {
        assert_eq!(graph_host("gov", None).unwrap(), "graph-gov.avepointonlineservices.com");
        assert_eq!(graph_host("gov", Some("gov")).unwrap(), "graph-gov.avepointonlineservices.com");
        assert_eq!(graph_host("fedramp", None).unwrap(), "graphusgovapi.online15.net");
        assert!(matches!(graph_host("gov", Some("us")), Err(RegionError::Contradicts { .. })));
        assert!(matches!(
            graph_host("commercial", Some("aos2")),
            Err(RegionError::Contradicts { .. })
        ));
        assert_eq!(graph_host("commercial", Some("xx")), Err(RegionError::Unknown));
        assert_eq!(graph_host("commercial", None).unwrap(), "graph-us.avepointonlineservices.com");
    }
}

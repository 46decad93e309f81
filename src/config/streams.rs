//! `[api]`'s export streams, validated: never empty, never overlapping, names unique.

use super::ConfigError;
use super::invalid;
use super::raw::ApiSection;
use crate::model::StreamSpec;

/// The export streams of `[api]`: never empty, never overlapping, names unique.
pub(super) fn stream_specs(p: &ApiSection) -> Result<Vec<StreamSpec>, ConfigError> {
    let mut streams: Vec<StreamSpec> = Vec::new();
    if p.streams.is_empty() {
        streams.push(StreamSpec::new(None, &p.product_types, &p.geo_locations));
    } else {
        if !p.product_types.is_empty() || !p.geo_locations.is_empty() {
            return Err(invalid(
                "api.streams",
                "set filters either in api.streams or in api.product_types/geo_locations, not both",
            ));
        }
        for s in &p.streams {
            let spec = StreamSpec::new(s.name.as_deref(), &s.product_types, &s.geo_locations);
            if spec.id.is_empty() || !spec.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(
                    "api.streams.name",
                    format!("{:?} may only hold letters, digits, '-' and '_'", spec.id),
                ));
            }
            if let Some(o) = streams
                .iter()
                .find(|o| o.id == spec.id || (o.name.is_some() && o.name == spec.name))
            {
                return Err(invalid(
                    "api.streams",
                    format!("stream {} is configured twice", o.name.as_deref().unwrap_or(&o.id)),
                ));
            }
            // Two streams that can both return a record would write it twice into one lake.
            if let Some(o) = streams.iter().find(|o| o.overlaps(&spec)) {
                return Err(invalid(
                    "api.streams",
                    format!(
                        "streams {} and {} overlap (a record can match both filters, and would be exported twice); make their productTypes or geoLocations disjoint",
                        o.id, spec.id
                    ),
                ));
            }
            streams.push(spec);
        }
    }
    Ok(streams)
}

//! The page reader against serde_json (issue 17: verdict and every value), on mutated pages
//! and on the edges of numbers and nesting; the same check is the `page_reader` fuzz target.

use aos_audit_export::fuzzing::check_page as check_against_serde;

const SEEDS: [&str; 4] = [
    r#"{"data":[{"actionName":"a\"b","actionTime":"2024-01-01T00:00:00Z","x":[1,-2.5e3,{"y":null}],"comment":"caf\u00e9 \ud83d\ude00 \/"},{},[1,2],"s",3,true,null],"nextLink":null,"other":{"k":[true,false]}}"#,
    "{ \"nextLink\" : \"https://h/aos/audit?skipToken=2\",\n \"data\" : [\n  { \"status\" : \"ok\" , \"riskScore\" : 0.5E+2 , \"status\" : \"\\t\" , \"k\\u0031\" : -0 },\n  { \"\" : \"é😀\" }\n ]\n}",
    r#"{"data":[{"actionUser":"x","a":1,"b":2,"a":3,"actionUser":"y\n","module":12345678901234567890123}]}"#,
    r#"{"x":[[[[]]]],"data":null}"#,
];

const ALPHABET: [char; 41] = [
    '{', '}', '[', ']', '"', ':', ',', '\\', '/', 'u', '0', '1', '9', 'a', 'd', 'D', 'c', 'F', '.', 'e', 'E', '+', '-', ' ', '\n', '\t',
    't', 'r', 'f', 'n', 'l', 's', 'x', '\u{1}', '\u{7f}', 'é', '😀', '8', '3', 'b', 'A',
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
    /// Mutated pages (bytes deleted, inserted, replaced, spans repeated): the scan agrees
    /// with serde_json on every one.
    #[test]
    fn the_scan_agrees_with_serde_json_on_mutated_pages(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), 0..4u8, proptest::sample::select(&ALPHABET[..]), 1..12usize),
            1..4,
        ),
    ) {
        let mut text: Vec<char> = SEEDS[seed].chars().collect();
        for (at, op, c, n) in edits {
            let i = at.index(text.len() + 1);
            match op {
                0 if i < text.len() => {
                    text.remove(i);
                }
                1 => text.insert(i, c),
                2 if i < text.len() => text[i] = c,
                _ => {
                    let end = (i + n).min(text.len());
                    let span: Vec<char> = text[i..end].to_vec();
                    text.splice(i..i, span);
                }
            }
        }
        check_against_serde(&text.into_iter().collect::<String>());
    }
}

#[test]
fn seeds_numbers_and_nesting_agree_with_serde_json() {
    for seed in SEEDS {
        check_against_serde(seed);
    }
    let big = "9".repeat(400);
    // 2^1024 - 2^970, the halfway point to infinity, written out (309 digits).
    let edge = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";
    for n in [
        "1e308",
        "1e309",
        "-1e400",
        "0.0e999",
        "1e-400",
        "1.7976931348623157e308",
        "-0.0",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "2E-3",
        &big,
        "123456789012345678901234567890",
        "1.79769313486231580794e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        edge,
    ] {
        check_against_serde(&format!(r#"{{"data":[{{"riskScore":{n}}},{n}]}}"#));
    }
    // serde_json's nesting limit, inside a record and around it.
    for depth in 120..=130 {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check_against_serde(&format!(r#"{{"data":[{{"x":{nested}}}]}}"#));
        check_against_serde(&format!(r#"{{"data":[{nested}]}}"#));
        check_against_serde(&format!(r#"{{"y":{nested},"data":[]}}"#));
    }
}

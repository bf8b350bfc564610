//! Built-in list prices of well-known models, for agents whose definition sets no `pricing`
//! (neither API streams a cost). Prices in USD per million tokens; unknown models cost 0.

use smith_core::Pricing;

/// (model name prefix, input, output). The longest matching prefix wins, so
/// `gpt-4o-mini` is not priced as `gpt-4o`.
const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4", 1.0, 5.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-haiku", 0.25, 1.25),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
];

/// The list price of a well-known model, by the longest matching name prefix.
pub fn builtin_pricing(model: &str) -> Option<Pricing> {
    PRICES
        .iter()
        .filter(|(prefix, _, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map(|&(_, input_per_mtok, output_per_mtok)| Pricing { input_per_mtok, output_per_mtok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_prices_a_model() {
        let cases = [
            ("claude-opus-4-1-20250805", Some((15.0, 75.0))),
            ("claude-opus-4-5-20251101", Some((5.0, 25.0))),
            ("claude-sonnet-4-20250514", Some((3.0, 15.0))),
            ("claude-haiku-4-5", Some((1.0, 5.0))),
            ("claude-3-5-haiku-latest", Some((0.8, 4.0))),
            ("gpt-4o-2024-08-06", Some((2.5, 10.0))),
            ("gpt-4o-mini", Some((0.15, 0.6))),
            ("gpt-4.1-mini-2025-04-14", Some((0.4, 1.6))),
            ("gpt-4.1", Some((2.0, 8.0))),
            ("llama3", None),
            ("", None),
        ];
        for (model, want) in cases {
            let got = builtin_pricing(model).map(|p| (p.input_per_mtok, p.output_per_mtok));
            assert_eq!(got, want, "{model}");
        }
    }
}

//! Properties of the static embedding encoder (`rescue_host::embed`), which
//! the host runs on whatever text the plugin passes to `embed.text-vector`:
//! request-derived, and under a hostile plugin arbitrary.

use std::sync::OnceLock;

use rescue_host::embed::{DIM, Embedder};

fn shipped() -> &'static Embedder {
    static MODEL: OnceLock<Embedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        Embedder::from_dir(&rescue_host::kb::source_tree_embeddings())
            .expect("the shipped embedding model loads")
    })
}

/// Checks one text. Properties: no panic; at most 512 token ids, each a
/// piece of the vocabulary and never the unknown token; the embedding has
/// 256 finite components and is either all zeros (no known word) or of unit
/// length; encoding is deterministic.
pub fn check(text: &str) {
    let model = shipped();
    let ids = model.token_ids(text);
    assert!(ids.len() <= 512, "{} ids", ids.len());
    for &id in &ids {
        assert!((id as usize) < model.vocab_size(), "id {id} out of range");
        assert_ne!(id, 1, "[UNK] kept");
    }
    let vector = model.embed(text);
    assert_eq!(vector.len(), DIM);
    assert!(vector.iter().all(|x| x.is_finite()), "non-finite component");
    let norm: f32 = vector.iter().map(|x| x * x).sum();
    let zero = vector.iter().all(|x| *x == 0.0);
    assert!(
        zero == ids.is_empty() || !zero,
        "zeros although ids {ids:?}"
    );
    assert!(zero || (norm - 1.0).abs() < 1e-3, "norm {norm}");
    assert_eq!(model.embed(text), vector, "not deterministic");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases() {
        for text in [
            "",
            "[PAD][UNK][PAD]",
            "[UNK",
            "é\u{301}\u{301}\u{301}",
            "\u{0}\u{FFFD}\u{200B}",
            &"ab".repeat(5000),
            &"a ".repeat(2000),
            "日本語のテキスト",
            "sql query user name",
        ] {
            check(text);
        }
    }
}

//! `rescue eval`: retrieval quality on labelled task sets.
//!
//! Each JSON line holds a `prompt`, an optional `lang` and the gold `cwe`
//! list (empty for ordinary tasks that must not be augmented). Every prompt
//! goes through the same path as a proxied request (facets, policy gate,
//! plugin, in fast mode or, given an upstream, full mode) once: the plugin
//! returns what it would inject under the configured parameters and, for
//! explanation, its fused ranking before the thresholds, on which Recall@k
//! and MRR are computed. "Lenient" also counts a
//! direct ChildOf parent or child of a gold CWE as a hit (the knowledge base's
//! `cwe_parent` table), as the dev sets' baseline does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::config::{Config, RetrievalMode};
use crate::error::{Error, Result};
use crate::offline::OfflineFullMode;
use crate::runtime::{PluginRuntime, RetrievalParams};

/// One labelled task.
#[derive(Debug, Clone)]
pub struct Task {
    pub prompt: String,
    pub lang: Option<String>,
    pub gold: Vec<u32>,
}

/// Metrics over one set (or one language of it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetMetrics {
    pub name: String,
    pub n: usize,
    pub positives: usize,
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    pub mrr: f64,
    pub len_r1: f64,
    pub len_r5: f64,
    pub len_r10: f64,
    pub len_mrr: f64,
    /// Share of tasks the proxy would augment.
    pub augmented: f64,
    /// Share of tasks augmented with a lenient hit among the injected CWEs.
    pub augmented_and_hit: f64,
    /// Of the CWEs injected into tasks with a gold CWE, the share that are
    /// lenient hits: how much of the injected knowledge is on the point.
    pub injected_precision: f64,
}

fn parse_task(line: &str, path: &Path, n: usize) -> Result<Task> {
    let bad = |message: String| Error::KbSource {
        path: path.to_path_buf(),
        message: format!("line {n}: {message}"),
    };
    let row: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let prompt = row
        .get("prompt")
        .and_then(|p| p.as_str())
        .ok_or_else(|| bad("no \"prompt\" string".into()))?;
    let gold = row
        .get("cwe")
        .and_then(|c| c.as_array())
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().and_then(crate::policy::parse_cwe))
                .collect()
        })
        .unwrap_or_default();
    Ok(Task {
        prompt: prompt.to_string(),
        lang: row.get("lang").and_then(|l| l.as_str()).map(str::to_string),
        gold,
    })
}

/// Reads a JSON-lines task file.
pub fn read_tasks(path: &Path) -> Result<Vec<Task>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| parse_task(line, path, i + 1))
        .collect()
}

/// Direct ChildOf neighbours (parents and children) of every CWE.
fn neighbours(kb: &Path) -> Result<BTreeMap<u32, BTreeSet<u32>>> {
    let sql = |source| Error::Sqlite {
        path: kb.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(kb, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql)?;
    let mut stmt = conn
        .prepare("SELECT child, parent FROM cwe_parent")
        .map_err(sql)?;
    let mut map: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?)))
        .map_err(sql)?;
    for row in rows {
        let (child, parent) = row.map_err(sql)?;
        map.entry(child).or_default().insert(parent);
        map.entry(parent).or_default().insert(child);
    }
    Ok(map)
}

fn cwe_number(id: &str) -> Option<u32> {
    crate::policy::parse_cwe(id)
}

/// What retrieval did for one task.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Ranked CWE numbers with the threshold off (up to 10).
    pub ranking: Vec<u32>,
    /// CWEs the proxy would inject (empty: not augmented).
    pub injected: Vec<u32>,
}

/// Runs retrieval for one task the way the proxy would: in full mode when
/// `full_mode` says where the upstream is, else in fast mode (whatever the
/// configuration's mode: evaluation calls an upstream only when told to).
pub fn retrieve(
    runtime: &PluginRuntime,
    config: &Config,
    task: &Task,
    full_mode: Option<&OfflineFullMode>,
) -> Result<Outcome> {
    let mut facets = crate::facets::extract(&task.prompt, &[]);
    if let Some(lang) = &task.lang {
        facets.language = Some(lang.clone());
    }
    let mode = match full_mode {
        Some(_) => RetrievalMode::Full,
        None => RetrievalMode::Fast,
    };
    let params = RetrievalParams {
        explain: true,
        ..RetrievalParams::from_config(&config.retrieval, mode, config.retrieval.top_k, vec![])
    };
    let gated = crate::policy::should_augment(config.augment.policy, &facets);
    let retrieval = match full_mode {
        Some(full_mode) => full_mode.retrieve(runtime, &facets, &params)?,
        None => runtime.augment_blocking(&facets, &params)?,
    };
    let injected = match (gated, retrieval.augmentation) {
        (true, Some(augmentation)) => augmentation.cwes,
        _ => Vec::new(),
    };
    // The ranking is the fusion before thresholds, so Recall@10 measures the
    // ranking itself, whatever the thresholds let through.
    let ranking = retrieval.candidates;
    Ok(Outcome {
        ranking: ranking.iter().filter_map(|c| cwe_number(&c.id)).collect(),
        injected: injected.iter().filter_map(|c| cwe_number(&c.id)).collect(),
    })
}

/// Metrics of `outcomes` against the tasks' gold labels.
pub fn score(
    name: &str,
    tasks: &[&Task],
    outcomes: &[&Outcome],
    neighbours: &BTreeMap<u32, BTreeSet<u32>>,
) -> SetMetrics {
    let mut m = SetMetrics {
        name: name.to_string(),
        n: tasks.len(),
        ..SetMetrics::default()
    };
    let mut augmented = 0usize;
    let mut augmented_and_hit = 0usize;
    let (mut injected_into_positives, mut injected_hits) = (0usize, 0usize);
    for (task, outcome) in tasks.iter().zip(outcomes) {
        let strict = |c: &u32| task.gold.contains(c);
        let lenient = |c: &u32| {
            strict(c)
                || task
                    .gold
                    .iter()
                    .any(|g| neighbours.get(g).is_some_and(|n| n.contains(c)))
        };
        if !outcome.injected.is_empty() {
            augmented += 1;
            if outcome.injected.iter().any(lenient) {
                augmented_and_hit += 1;
            }
        }
        if task.gold.is_empty() {
            continue;
        }
        m.positives += 1;
        injected_into_positives += outcome.injected.len();
        injected_hits += outcome.injected.iter().filter(|c| lenient(c)).count();
        let rank = outcome.ranking.iter().position(strict);
        let len_rank = outcome.ranking.iter().position(lenient);
        for (rank, r1, r5, r10, mrr) in [
            (rank, &mut m.r1, &mut m.r5, &mut m.r10, &mut m.mrr),
            (
                len_rank,
                &mut m.len_r1,
                &mut m.len_r5,
                &mut m.len_r10,
                &mut m.len_mrr,
            ),
        ] {
            if let Some(r) = rank {
                *r1 += (r < 1) as u8 as f64;
                *r5 += (r < 5) as u8 as f64;
                *r10 += (r < 10) as u8 as f64;
                *mrr += 1.0 / (r as f64 + 1.0);
            }
        }
    }
    let positives = m.positives.max(1) as f64;
    for value in [
        &mut m.r1,
        &mut m.r5,
        &mut m.r10,
        &mut m.mrr,
        &mut m.len_r1,
        &mut m.len_r5,
        &mut m.len_r10,
        &mut m.len_mrr,
    ] {
        *value /= positives;
    }
    let n = m.n.max(1) as f64;
    m.augmented = augmented as f64 / n;
    m.augmented_and_hit = augmented_and_hit as f64 / n;
    m.injected_precision = injected_hits as f64 / injected_into_positives.max(1) as f64;
    m
}

/// Evaluates every file, `jobs` tasks at a time, and returns one row per set
/// and per language in it.
pub fn run(
    runtime: &PluginRuntime,
    config: &Config,
    files: &[PathBuf],
    full_mode: Option<&OfflineFullMode>,
    jobs: usize,
) -> Result<Vec<SetMetrics>> {
    let neighbours = neighbours(&config.kb.path)?;
    let mut rows = Vec::new();
    for file in files {
        let tasks = read_tasks(file)?;
        let outcomes = parallel_map(&tasks, jobs, |t| retrieve(runtime, config, t, full_mode))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        rows.push(score(
            &name,
            &tasks.iter().collect::<Vec<_>>(),
            &outcomes.iter().collect::<Vec<_>>(),
            &neighbours,
        ));
        let languages: BTreeSet<&str> = tasks.iter().filter_map(|t| t.lang.as_deref()).collect();
        if languages.len() > 1 {
            for lang in languages {
                let (t, o): (Vec<&Task>, Vec<&Outcome>) = tasks
                    .iter()
                    .zip(&outcomes)
                    .filter(|(t, _)| t.lang.as_deref() == Some(lang))
                    .unzip();
                rows.push(score(&format!("  {name} [{lang}]"), &t, &o, &neighbours));
            }
        }
    }
    Ok(rows)
}

/// `f` of every item, in order, computed by up to `jobs` threads.
fn parallel_map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if jobs <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    *results[i].lock().expect("result slot lock") = Some(f(item));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("result slot lock")
                .expect("every item was mapped")
        })
        .collect()
}

/// The rows as a Markdown table. Recall columns are over the tasks with a
/// gold CWE; `aug` is over all tasks (for a negative set, the false-augmentation rate);
/// `inj-prec` is over the CWEs injected into tasks with a gold CWE.
pub fn table(rows: &[SetMetrics]) -> String {
    let mut out = String::from(
        "| set | n | R@1 | R@5 | R@10 | MRR | len-R@1 | len-R@5 | len-R@10 | len-MRR | aug | aug&len-hit | inj-prec |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in rows {
        let recall = |v: f64| {
            if m.positives == 0 {
                "-".to_string()
            } else {
                format!("{v:.3}")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {} | {} |",
            m.name,
            m.n,
            recall(m.r1),
            recall(m.r5),
            recall(m.r10),
            recall(m.mrr),
            recall(m.len_r1),
            recall(m.len_r5),
            recall(m.len_r10),
            recall(m.len_mrr),
            m.augmented,
            recall(m.augmented_and_hit),
            recall(m.injected_precision),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(gold: &[u32]) -> Task {
        Task {
            prompt: String::new(),
            lang: None,
            gold: gold.to_vec(),
        }
    }

    #[test]
    fn strict_and_lenient_ranks() {
        let neighbours = BTreeMap::from([(89, BTreeSet::from([943])), (943, BTreeSet::from([89]))]);
        let tasks = [task(&[89]), task(&[79]), task(&[])];
        let outcomes = [
            Outcome {
                ranking: vec![943, 20, 89],
                injected: vec![943],
            },
            Outcome {
                ranking: vec![20],
                injected: vec![],
            },
            Outcome {
                ranking: vec![22],
                injected: vec![22],
            },
        ];
        let m = score(
            "t",
            &tasks.iter().collect::<Vec<_>>(),
            &outcomes.iter().collect::<Vec<_>>(),
            &neighbours,
        );
        assert_eq!((m.n, m.positives), (3, 2));
        assert_eq!(m.r1, 0.0);
        assert_eq!(m.r5, 0.5);
        assert!((m.mrr - (1.0 / 3.0) / 2.0).abs() < 1e-9);
        assert_eq!(m.len_r1, 0.5, "943 is a parent of 89");
        assert!((m.augmented - 2.0 / 3.0).abs() < 1e-9);
        assert!((m.augmented_and_hit - 1.0 / 3.0).abs() < 1e-9);
        // 943 was injected into a positive and is a hit; 22 went to the
        // negative, which has nothing to hit.
        assert_eq!(m.injected_precision, 1.0);
    }

    #[test]
    fn parses_dev_set_lines() {
        let t = parse_task(
            r#"{"id":"x","lang":"c","cwe":["CWE-787"],"prompt":"p"}"#,
            Path::new("f"),
            1,
        )
        .unwrap();
        assert_eq!((t.gold, t.lang.as_deref()), (vec![787], Some("c")));
        let neg = parse_task(r#"{"cwe":[],"prompt":"p"}"#, Path::new("f"), 1).unwrap();
        assert!(neg.gold.is_empty());
        assert!(
            parse_task(r#"{"cwe":[]}"#, Path::new("f"), 3)
                .unwrap_err()
                .to_string()
                .contains("line 3")
        );
    }
}

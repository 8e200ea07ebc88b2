//! The classifier facet's model, trained at build time: multinomial
//! logistic regression from a request's embedding to the weakness whose
//! task texts it reads like.
//!
//! The scenario facet compares a request with each weakness's few closest
//! task texts; a linear model trained on all of them (the developer
//! scenarios, the code pairs' task descriptions, and the ordinary coding
//! tasks as a class of their own) learns which directions of the embedding
//! space tell the weaknesses apart, and weighs a weakness against every
//! other one at once (EVAL.md, "Classifier facet"). The KB build (host
//! crate, kb::build) trains it; the plugin only scores it. Training is L2-penalised
//! maximum likelihood, solved with L-BFGS in f64 in a fixed order, so the
//! same inputs give the same bytes.

/// Inverse strength of the L2 penalty on the weights (the penalty is
/// ||W||^2 / (2 C) against the summed log-loss, the bias unpenalised):
/// chosen by 5-fold cross-validated log-loss on the shipped training texts
/// (C = 1, 2, 4, 8, 16, 32, 64: 8 best), not on any evaluation set.
pub const REGULARISATION: f64 = 8.0;

/// L-BFGS stops after this many iterations at most (about 130 are needed
/// on the shipped KB's texts).
const MAX_ITERATIONS: usize = 1000;
/// Curvature pairs L-BFGS keeps.
const HISTORY: usize = 10;
/// Converged when the largest gradient component is this small relative
/// to the number of samples (the objective is a sum over them).
const GRADIENT_TOLERANCE: f64 = 1e-6;

/// A trained model: one row of weights and a bias per class. The score of
/// class k for a unit query vector q is `biases[k] + weights[k] . q`; a
/// softmax over all classes turns scores into probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    /// Class labels (for the KB: CWE ids, 0 for ordinary tasks), ascending.
    pub classes: Vec<u32>,
    pub biases: Vec<f64>,
    /// One row per class, each of the samples' dimension.
    pub weights: Vec<Vec<f32>>,
    /// Iterations L-BFGS took (for the build log).
    pub iterations: usize,
}

/// Trains on `(class, vector)` samples (vectors of one dimension; zero
/// vectors carry no information and should be left out by the caller).
/// `None` without samples or with fewer than two classes: there is nothing
/// to tell apart.
pub fn train(samples: &[(u32, Vec<f32>)], regularisation: f64) -> Option<Classifier> {
    let dimension = samples.first()?.1.len();
    let mut classes: Vec<u32> = samples.iter().map(|(class, _)| *class).collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 || samples.iter().any(|(_, v)| v.len() != dimension) {
        return None;
    }
    let problem = Problem::new(samples, &classes, regularisation);
    let (theta, iterations) = lbfgs(&problem, vec![0.0; problem.parameters()]);
    let stride = dimension + 1;
    Some(Classifier {
        biases: (0..classes.len())
            .map(|k| theta[k * stride + dimension])
            .collect(),
        weights: (0..classes.len())
            .map(|k| {
                theta[k * stride..k * stride + dimension]
                    .iter()
                    .map(|&w| w as f32)
                    .collect()
            })
            .collect(),
        classes,
        iterations,
    })
}

/// The training problem: parameters are laid out per class as its weights
/// followed by its bias.
struct Problem {
    inputs: Vec<Vec<f64>>,
    labels: Vec<usize>,
    classes: usize,
    dimension: usize,
    penalty: f64,
}

impl Problem {
    /// The problem of telling `classes` (ascending, every sample's among
    /// them) apart in `samples` (vectors of one dimension).
    fn new(samples: &[(u32, Vec<f32>)], classes: &[u32], regularisation: f64) -> Self {
        Self {
            inputs: samples
                .iter()
                .map(|(_, v)| v.iter().map(|&x| f64::from(x)).collect())
                .collect(),
            labels: samples
                .iter()
                .map(|(class, _)| classes.binary_search(class).unwrap_or_default())
                .collect(),
            classes: classes.len(),
            dimension: samples.first().map_or(0, |(_, v)| v.len()),
            penalty: 1.0 / regularisation,
        }
    }

    fn parameters(&self) -> usize {
        self.classes * (self.dimension + 1)
    }

    /// The penalised negative log-likelihood at `theta` and its gradient.
    fn evaluate(&self, theta: &[f64], gradient: &mut [f64]) -> f64 {
        let stride = self.dimension + 1;
        gradient.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        let mut scores = vec![0.0; self.classes];
        for (x, &label) in self.inputs.iter().zip(&self.labels) {
            for (k, score) in scores.iter_mut().enumerate() {
                let row = &theta[k * stride..(k + 1) * stride];
                *score = row[self.dimension] + dot(&row[..self.dimension], x);
            }
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            loss += max + sum.ln() - scores[label];
            for (k, score) in scores.iter().enumerate() {
                let residual = (score - max).exp() / sum - f64::from(u8::from(k == label));
                let row = &mut gradient[k * stride..(k + 1) * stride];
                for (g, xj) in row[..self.dimension].iter_mut().zip(x) {
                    *g += residual * xj;
                }
                row[self.dimension] += residual;
            }
        }
        for k in 0..self.classes {
            let weights = k * stride..k * stride + self.dimension;
            loss += 0.5 * self.penalty * dot(&theta[weights.clone()], &theta[weights.clone()]);
            for (g, w) in gradient[weights.clone()].iter_mut().zip(&theta[weights]) {
                *g += self.penalty * w;
            }
        }
        loss
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Limited-memory BFGS with a backtracking (Armijo) line search; returns the
/// minimiser and the iterations taken. The objective is convex and smooth,
/// so this converges to its one minimum.
fn lbfgs(problem: &Problem, mut theta: Vec<f64>) -> (Vec<f64>, usize) {
    let n = theta.len();
    let tolerance = GRADIENT_TOLERANCE * problem.inputs.len() as f64;
    let mut gradient = vec![0.0; n];
    let mut loss = problem.evaluate(&theta, &mut gradient);
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::with_capacity(HISTORY);
    let mut next = vec![0.0; n];
    let mut next_gradient = vec![0.0; n];
    for iteration in 0..MAX_ITERATIONS {
        if gradient.iter().all(|g| g.abs() <= tolerance) {
            return (theta, iteration);
        }
        // Two-loop recursion: direction = -H * gradient.
        let mut direction: Vec<f64> = gradient.iter().map(|g| -g).collect();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let alpha = rho * dot(s, &direction);
            direction
                .iter_mut()
                .zip(y)
                .for_each(|(d, yi)| *d -= alpha * yi);
            alphas.push(alpha);
        }
        let gamma = history
            .back()
            .map_or(1.0 / norm(&gradient).max(1.0), |(s, y, _)| {
                dot(s, y) / dot(y, y)
            });
        direction.iter_mut().for_each(|d| *d *= gamma);
        for ((s, y, rho), alpha) in history.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &direction);
            direction
                .iter_mut()
                .zip(s)
                .for_each(|(d, si)| *d += (alpha - beta) * si);
        }
        let mut slope = dot(&gradient, &direction);
        if slope >= 0.0 {
            // Not a descent direction (lost curvature): restart from the
            // gradient.
            history.clear();
            direction = gradient.iter().map(|g| -g / norm(&gradient)).collect();
            slope = dot(&gradient, &direction);
        }
        let mut step = 1.0;
        let mut next_loss;
        loop {
            next.iter_mut()
                .zip(&theta)
                .zip(&direction)
                .for_each(|((t, x), d)| *t = x + step * d);
            next_loss = problem.evaluate(&next, &mut next_gradient);
            if next_loss <= loss + 1e-4 * step * slope || step < 1e-12 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_gradient
            .iter()
            .zip(&gradient)
            .map(|(a, b)| a - b)
            .collect();
        let curvature = dot(&s, &y);
        let improved = loss - next_loss;
        std::mem::swap(&mut theta, &mut next);
        std::mem::swap(&mut gradient, &mut next_gradient);
        loss = next_loss;
        if curvature > 1e-12 {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / curvature));
        }
        if improved.abs() <= f64::EPSILON * loss.abs().max(1.0) {
            return (theta, iteration + 1);
        }
    }
    (theta, MAX_ITERATIONS)
}

fn norm(v: &[f64]) -> f64 {
    dot(v, v).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Softmax probabilities of `q` under the model.
    fn probabilities(model: &Classifier, q: &[f32]) -> Vec<f64> {
        let scores: Vec<f64> = model
            .weights
            .iter()
            .zip(&model.biases)
            .map(|(w, b)| b + w.iter().zip(q).map(|(a, b)| f64::from(a * b)).sum::<f64>())
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        scores.iter().map(|s| (s - max).exp() / sum).collect()
    }

    fn clusters() -> Vec<(u32, Vec<f32>)> {
        // Three classes around three directions, with some spread.
        let mut samples = Vec::new();
        for (class, centre) in [
            (0u32, [1.0, 0.1, 0.0]),
            (79, [0.0, 1.0, 0.2]),
            (89, [0.1, 0.0, 1.0]),
        ] {
            for jitter in [-0.3f32, -0.1, 0.1, 0.3] {
                let v = [
                    centre[0] + jitter,
                    centre[1] - jitter / 2.0,
                    centre[2] + jitter / 3.0,
                ];
                samples.push((class, unit(&v)));
            }
        }
        samples
    }

    #[test]
    fn learns_to_tell_the_classes_apart() {
        let model = train(&clusters(), REGULARISATION).unwrap();
        assert_eq!(model.classes, vec![0, 79, 89]);
        for (class, q) in [
            (0, [0.9, 0.0, 0.1]),
            (1, [0.1, 0.8, 0.1]),
            (2, [0.0, 0.2, 0.9]),
        ] {
            let p = probabilities(&model, &unit(&q));
            let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            assert_eq!(best, class, "{q:?}: {p:?}");
            assert!(p[class] > 0.6, "{q:?}: {p:?}");
        }
        assert!(model.iterations < MAX_ITERATIONS);
    }

    #[test]
    fn reaches_the_minimum_the_gradient_says() {
        let samples = clusters();
        let model = train(&samples, 2.0).unwrap();
        let problem = Problem::new(&samples, &model.classes, 2.0);
        let theta: Vec<f64> = (0..3)
            .flat_map(|k| {
                model.weights[k]
                    .iter()
                    .map(|&w| f64::from(w))
                    .chain([model.biases[k]])
            })
            .collect();
        let mut gradient = vec![0.0; theta.len()];
        problem.evaluate(&theta, &mut gradient);
        // f32 weights: the gradient is zero up to their rounding.
        assert!(gradient.iter().all(|g| g.abs() < 1e-4), "{gradient:?}");
    }

    #[test]
    fn the_gradient_is_the_derivative_of_the_loss() {
        let samples = clusters();
        let problem = Problem::new(&samples, &[0, 79, 89], 4.0);
        let theta: Vec<f64> = (0..12).map(|i| (f64::from(i) * 0.37).sin()).collect();
        let mut gradient = vec![0.0; 12];
        problem.evaluate(&theta, &mut gradient);
        let mut scratch = vec![0.0; 12];
        for i in 0..12 {
            let h = 1e-6;
            let mut up = theta.clone();
            up[i] += h;
            let mut down = theta.clone();
            down[i] -= h;
            let numeric = (problem.evaluate(&up, &mut scratch)
                - problem.evaluate(&down, &mut scratch))
                / (2.0 * h);
            assert!(
                (numeric - gradient[i]).abs() < 1e-6,
                "{i}: {numeric} vs {}",
                gradient[i]
            );
        }
    }

    #[test]
    fn the_same_samples_give_the_same_model() {
        assert_eq!(train(&clusters(), 8.0), train(&clusters(), 8.0));
    }

    #[test]
    fn nothing_to_tell_apart_is_no_model() {
        assert_eq!(train(&[], 8.0), None);
        assert_eq!(train(&[(89, vec![1.0, 0.0])], 8.0), None);
        assert_eq!(train(&[(89, vec![1.0, 0.0]), (79, vec![1.0])], 8.0), None);
    }
}

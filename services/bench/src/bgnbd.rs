//! The BG/NBD model (Fader, Hardie and Lee, 2005): the expected-purchases
//! baseline the learned churn model is compared with.
//!
//! In: each buyer's repeat purchases `x`, the time of their last purchase
//! `t_x` and their age `t` (days since the first one). Out: the fitted
//! parameters (maximum likelihood, Nelder-Mead over their logarithms), and per
//! customer the expected purchases in the next `h` days and the probability
//! of being alive. Keeps nothing.

/// A buyer's history, in days.
#[derive(Clone, Copy, Debug)]
pub struct History {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    /// Fits the parameters to `data` by maximum likelihood.
    pub fn fit(data: &[History]) -> BgNbd {
        let start = [0.5f64.ln(), 10f64.ln(), 0.8f64.ln(), 2.5f64.ln()];
        let nll = |p: &[f64; 4]| {
            let m = BgNbd::from_logs(p);
            -data.iter().map(|h| m.log_likelihood(h)).sum::<f64>()
        };
        BgNbd::from_logs(&nelder_mead(nll, start, 400))
    }

    fn from_logs(p: &[f64; 4]) -> BgNbd {
        let e = |v: f64| v.clamp(-8.0, 8.0).exp();
        BgNbd {
            r: e(p[0]),
            alpha: e(p[1]),
            a: e(p[2]),
            b: e(p[3]),
        }
    }

    fn log_likelihood(&self, h: &History) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = h.x;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + h.t).ln();
        let tail = if x > 0.0 {
            let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + h.t_x).ln();
            (a3.max(a4)) + ((a3 - a3.max(a4)).exp() + (a4 - a3.max(a4)).exp()).ln()
        } else {
            a3
        };
        a1 + a2 + tail
    }

    /// The probability that the buyer is still alive.
    pub fn p_alive(&self, h: &History) -> f64 {
        if h.x <= 0.0 {
            return 1.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let odds = a / (b + h.x - 1.0) * ((alpha + h.t) / (alpha + h.t_x)).powf(r + h.x);
        1.0 / (1.0 + odds)
    }

    /// Expected purchases in the next `days` (Fader et al., eq. 10).
    pub fn expected(&self, h: &History, days: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        if a <= 1.0 {
            // The closed form needs a > 1; fall back on P(alive) x the rate.
            return self.p_alive(h) * (r + h.x) / (alpha + h.t) * days;
        }
        let x = h.x;
        let z = days / (alpha + h.t + days);
        let f = hyp2f1(r + x, b + x, a + b + x - 1.0, z);
        let num = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ((alpha + h.t) / (alpha + h.t + days)).powf(r + x) * f);
        let den = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * ((alpha + h.t) / (alpha + h.t_x)).powf(r + x)
        } else {
            1.0
        };
        (num / den).max(0.0)
    }
}

/// Gauss's hypergeometric function by its series (|z| < 1).
fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let (mut term, mut sum) = (1.0, 1.0);
    for n in 0..2000 {
        let n = f64::from(n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term.abs() < 1e-12 * sum.abs() {
            break;
        }
    }
    sum
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut s = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        s += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// Minimises `f` from `start` (Nelder-Mead, standard coefficients).
#[allow(clippy::needless_range_loop)] // four coordinates, indexed alike in three arrays
fn nelder_mead(f: impl Fn(&[f64; 4]) -> f64, start: [f64; 4], iterations: usize) -> [f64; 4] {
    let mut simplex: Vec<([f64; 4], f64)> = (0..5)
        .map(|i| {
            let mut p = start;
            if i > 0 {
                p[i - 1] += 0.5;
            }
            (p, f(&p))
        })
        .collect();
    let value = |v: f64| if v.is_finite() { v } else { f64::MAX };
    for _ in 0..iterations {
        simplex.sort_by(|a, b| value(a.1).total_cmp(&value(b.1)));
        let worst = simplex[4];
        let mut centroid = [0.0; 4];
        for (p, _) in &simplex[..4] {
            for k in 0..4 {
                centroid[k] += p[k] / 4.0;
            }
        }
        let along = |t: f64| {
            let mut p = [0.0; 4];
            for k in 0..4 {
                p[k] = centroid[k] + t * (worst.0[k] - centroid[k]);
            }
            (p, f(&p))
        };
        let reflected = along(-1.0);
        if value(reflected.1) < value(simplex[0].1) {
            let expanded = along(-2.0);
            simplex[4] = if value(expanded.1) < value(reflected.1) {
                expanded
            } else {
                reflected
            };
        } else if value(reflected.1) < value(simplex[3].1) {
            simplex[4] = reflected;
        } else {
            let contracted = along(0.5);
            if value(contracted.1) < value(worst.1) {
                simplex[4] = contracted;
            } else {
                let best = simplex[0].0;
                for s in simplex.iter_mut().skip(1) {
                    for k in 0..4 {
                        s.0[k] = best[k] + 0.5 * (s.0[k] - best[k]);
                    }
                    s.1 = f(&s.0);
                }
            }
        }
    }
    simplex.sort_by(|a, b| value(a.1).total_cmp(&value(b.1)));
    simplex[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        for (n, fact) in [(1.0, 1.0f64), (2.0, 1.0), (5.0, 24.0), (10.0, 362_880.0)] {
            assert!((ln_gamma(n) - fact.ln()).abs() < 1e-9, "{n}");
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-9);
    }

    #[test]
    fn hyp2f1_matches_a_closed_form() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z
        let z: f64 = 0.6;
        assert!((hyp2f1(1.0, 1.0, 2.0, z) + (1.0 - z).ln() / z).abs() < 1e-9);
    }

    /// The paper's CDNOW parameters: a buyer with many recent purchases is
    /// alive and expected to buy more than one who stopped long ago.
    #[test]
    fn recent_frequent_buyers_are_alive_and_expected_to_buy() {
        let m = BgNbd {
            r: 0.243,
            alpha: 4.414 * 7.0,
            a: 0.793,
            b: 2.426,
        };
        let active = History {
            x: 6.0,
            t_x: 250.0,
            t: 260.0,
        };
        let lapsed = History {
            x: 6.0,
            t_x: 60.0,
            t: 260.0,
        };
        assert!(m.p_alive(&active) > 0.85, "{}", m.p_alive(&active));
        assert!(m.p_alive(&lapsed) < 0.2);
        assert!(m.expected(&active, 90.0) > 5.0 * m.expected(&lapsed, 90.0));
        assert_eq!(
            m.p_alive(&History {
                x: 0.0,
                t_x: 0.0,
                t: 100.0
            }),
            1.0
        );
    }

    /// Fitting recovers a clear difference between two kinds of buyers: the
    /// likelihood of the fitted parameters beats the starting point's.
    #[test]
    fn fitting_improves_the_likelihood() {
        let mut data = Vec::new();
        for i in 0..300 {
            let i = f64::from(i);
            data.push(History {
                x: (i % 7.0),
                t_x: 20.0 * (i % 7.0),
                t: 200.0,
            });
            data.push(History {
                x: 1.0,
                t_x: 5.0,
                t: 200.0,
            });
        }
        let ll = |m: &BgNbd| data.iter().map(|h| m.log_likelihood(h)).sum::<f64>();
        let fitted = BgNbd::fit(&data);
        let start = BgNbd {
            r: 0.5,
            alpha: 10.0,
            a: 0.8,
            b: 2.5,
        };
        assert!(ll(&fitted) > ll(&start) + 1.0, "{} vs {}", ll(&fitted), ll(&start));
    }
}

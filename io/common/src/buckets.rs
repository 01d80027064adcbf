//! The bucket bounds of the service's histograms, shared so that every
//! latency graphs on the same scale and dashboards can add them up.

/// `n` bounds from `min` to `max`, each the same factor above the last,
/// rounded to three significant digits so that the `le` labels read well.
pub fn exponential(min: f64, max: f64, n: u16) -> impl Iterator<Item = f64> {
    assert!(min > 0.0 && max > min && n >= 2, "bad bucket bounds");
    let factor = (max / min).powf(1.0 / f64::from(n - 1));
    (0..n).map(move |i| {
        let b = min * factor.powi(i32::from(i));
        let scale = 10f64.powi(2 - b.log10().floor() as i32);
        (b * scale).round() / scale
    })
}

/// Latency in seconds, from a stream entry or a queue to its effect: 40
/// bounds from 1 ms to 60 s, about 1.33 apart, so a quantile estimated from
/// them is within a third of the truth.
pub fn latency() -> impl Iterator<Item = f64> {
    exponential(0.001, 60.0, 40)
}

/// A wait between polls in seconds: 30 bounds from 1 s to 30 days.
pub fn poll_wait() -> impl Iterator<Item = f64> {
    exponential(1.0, 30.0 * 24.0 * 3600.0, 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_rise_from_min_to_max_in_three_digits() {
        let b: Vec<f64> = latency().collect();
        assert_eq!((b.len(), b[0], b[39]), (40, 0.001, 60.0));
        assert!(
            b.windows(2)
                .all(|w| w[1] / w[0] > 1.3 && w[1] / w[0] < 1.36)
        );
        for v in &b {
            let digits = format!("{v:e}");
            let mantissa = digits.split('e').next().unwrap();
            assert!(mantissa.len() <= 4, "{v} is {digits}");
        }
        let p: Vec<f64> = poll_wait().collect();
        assert_eq!((p[0], p[29]), (1.0, 2_590_000.0));
    }
}

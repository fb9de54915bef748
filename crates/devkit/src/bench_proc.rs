//! What the benchmark reads from `/proc` around a scenario: the CPU time a proxy's
//! processes spent (utime + stime of the process and its children, e.g. nginx's workers),
//! the machine's steal time, and the load average. CPU per request is far less sensitive
//! than req/s to the other tenants of a shared machine, so it is the figure compared.

/// Clock ticks per second of `/proc/*/stat` and `/proc/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (parent pid, utime, stime) in ticks from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some((fields.get(1)?.parse().ok()?, fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// CPU seconds (user, system) of `pid` and its direct children so far.
pub fn cpu_seconds(pid: u32) -> (f64, f64) {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if child != pid && stat(child).is_some_and(|(ppid, _, _)| ppid == pid) {
                pids.push(child);
            }
        }
    }
    let (user, system) = pids.into_iter().filter_map(stat).fold((0u64, 0u64), |(u, s), (_, cu, cs)| (u + cu, s + cs));
    let tck = ticks_per_second();
    (user as f64 / tck, system as f64 / tck)
}

/// The machine's CPU ticks so far: (steal, all).
pub fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // counted in user already.
    let all = values.iter().take(8).sum();
    (values.get(7).copied().unwrap_or(0), all)
}

/// The one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// A snapshot taken before a scenario; [`Sample::finish`] gives what it cost.
pub struct Sample {
    pid: Option<u32>,
    cpu: (f64, f64),
    machine: (u64, u64),
}

/// What a scenario cost the machine and its proxy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    /// CPU seconds of the proxy's processes (user, system); zero without a process.
    pub cpu: (f64, f64),
    /// Share of the machine's CPU time stolen by the hypervisor, 0..1.
    pub steal: f64,
    /// One-minute load average at the end.
    pub load: f64,
}

impl Sample {
    pub fn start(pid: Option<u32>) -> Sample {
        Sample { pid, cpu: pid.map(cpu_seconds).unwrap_or_default(), machine: machine_ticks() }
    }

    pub fn finish(self) -> Cost {
        let cpu = self.pid.map(cpu_seconds).unwrap_or_default();
        let (steal, all) = machine_ticks();
        let all = all.saturating_sub(self.machine.1);
        Cost {
            cpu: ((cpu.0 - self.cpu.0).max(0.0), (cpu.1 - self.cpu.1).max(0.0)),
            steal: if all == 0 { 0.0 } else { steal.saturating_sub(self.machine.0) as f64 / all as f64 },
            load: load_average(),
        }
    }
}

/// The median of `values` (NaN when empty).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_spends_cpu_and_the_machine_has_ticks() {
        let before = cpu_seconds(std::process::id());
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_seconds(std::process::id());
        assert!(after.0 + after.1 > before.0 + before.1, "{before:?} -> {after:?}");
        assert!(machine_ticks().1 > 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}

//! Headless Chromium for the readback pages: where the test artifacts go, the browser itself,
//! the page's DOM as rendered, a layout probe (does anything overflow the window?) and a
//! screenshot. The pages carry no script; the probe runs in a copy of the page made for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `target/test-artifacts`, next to the build output.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts directory");
    dir
}

/// The browser on `PATH`, if any.
pub fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
}

/// Runs the browser headless with `args`, without any network of its own.
pub async fn chromium(binary: &Path, profile: &Path, args: &[String]) -> std::process::Output {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium ran")
}

/// The DOM of `file` once the browser rendered it.
pub async fn rendered_dom(binary: &Path, profile: &Path, file: &Path) -> String {
    let url = format!("file://{}", file.display());
    let output = chromium(binary, profile, &["--dump-dom".to_string(), url]).await;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How a page lays out in a window `width` px wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The document's scroll width and the window's inner width.
    pub scroll_width: u32,
    pub inner_width: u32,
    /// Elements wider than their box: a scroll container whose content overflows, or any
    /// element reaching past the window's right edge (by tag, id and class).
    pub overflowing: Vec<String>,
}

const PROBE: &str = r#"<script>
(function () {
  var inner = window.innerWidth, wide = [];
  document.querySelectorAll('body *').forEach(function (e) {
    var r = e.getBoundingClientRect();
    var scrolls = getComputedStyle(e).overflowX !== 'visible' && e.scrollWidth > e.clientWidth + 1;
    var cls = typeof e.className === 'string' ? e.className : '';
    if (scrolls || r.right > inner + 1) { wide.push(e.tagName.toLowerCase() + '#' + e.id + '.' + cls); }
  });
  document.body.setAttribute('data-probe-scroll-width', String(document.documentElement.scrollWidth));
  document.body.setAttribute('data-probe-inner-width', String(inner));
  document.body.setAttribute('data-probe-overflowing', wide.slice(0, 20).join(' '));
})();
</script>"#;

/// Lays `file` out in a window `width` px wide (a copy with a probe script next to it).
pub async fn layout(binary: &Path, profile: &Path, file: &Path, width: u32) -> Layout {
    let html = std::fs::read_to_string(file).expect("the page to probe");
    let probed = file.with_extension("probe.html");
    std::fs::write(&probed, html.replacen("</body>", &format!("{PROBE}</body>"), 1)).expect("probe copy");
    let url = format!("file://{}", probed.display());
    let size = format!("--window-size={width},900");
    let output = chromium(binary, profile, &[size, "--dump-dom".to_string(), url]).await;
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    let attribute = |name: &str| -> String {
        let start = dom.find(&format!("{name}=\"")).unwrap_or_else(|| {
            panic!("the probe did not run ({name} missing): {}", String::from_utf8_lossy(&output.stderr))
        }) + name.len()
            + 2;
        dom[start..].split('"').next().unwrap_or_default().to_string()
    };
    Layout {
        scroll_width: attribute("data-probe-scroll-width").parse().expect("a width"),
        inner_width: attribute("data-probe-inner-width").parse().expect("a width"),
        overflowing: attribute("data-probe-overflowing").split_whitespace().map(str::to_string).collect(),
    }
}

/// Takes a screenshot of `file` in a window `width` x `height` into `png`; returns its size.
pub async fn screenshot(
    binary: &Path,
    profile: &Path,
    file: &Path,
    png: &Path,
    (width, height): (u32, u32),
) -> u64 {
    let _ = std::fs::remove_file(png);
    let url = format!("file://{}", file.display());
    let args = [format!("--screenshot={}", png.display()), format!("--window-size={width},{height}"), url];
    let shot = chromium(binary, profile, &args).await;
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "no screenshot at {}: {}", png.display(), String::from_utf8_lossy(&shot.stderr));
    size
}

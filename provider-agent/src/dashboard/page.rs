//! The page's files, built into the binary: no CDN, nothing fetched from
//! outside the agent. The chart is drawn by `app.js` on a canvas.

pub const INDEX: &str = include_str!("page/index.html");
pub const SCRIPT: &str = include_str!("page/app.js");
pub const STYLE: &str = include_str!("page/app.css");

//! Pictures a person checks at a glance: where the glands are on CT, how hot they are on
//! PET, and whether the outline sits on the gland. Panels follow the radiological
//! convention (the patient's right on the image's left), are sampled in world coordinates
//! (so oblique or flipped volumes still display upright), and carry orientation letters.

pub mod chart;
pub mod font;
pub mod review;

pub use review::{render_review, save_png};

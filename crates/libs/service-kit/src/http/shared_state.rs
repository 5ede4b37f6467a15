//! A service's router state, behind one `Arc`.
//!
//! axum clones the state for each extractor and each `from_fn_with_state` middleware of every
//! request. A state of a dozen fields — pools, verifiers, clients, a shutdown token whose clone
//! takes a lock — pays a dozen clones and drops each time; under order load that was 2.5% of
//! the process's CPU (docs/performance.md). Behind one `Arc` it is one reference count.
//!
//! Each service declares its own state type with [`shared_state!`](crate::shared_state): its
//! own, not a generic wrapper, so that it can implement axum's `FromRef` for its verifiers
//! (the orphan rule allows that for a local type only).

/// Declares a cloneable handle on a service's shared state: `$state(Arc<$shared>)`, built with
/// `$state::new`, and dereferencing to `$shared`, so handlers read `state.pool` as before.
///
/// ```
/// pub struct Shared {
///     pub name: String,
/// }
///
/// service_kit::shared_state! {
///     /// What every handler shares.
///     pub struct AppState(Shared);
/// }
///
/// let state = AppState::new(Shared { name: "orders".to_owned() });
/// let copy = state.clone();
/// assert_eq!(copy.name, "orders");
/// ```
#[macro_export]
macro_rules! shared_state {
    ($(#[$meta:meta])* $vis:vis struct $state:ident($shared:ty);) => {
        $(#[$meta])*
        #[derive(Clone)]
        $vis struct $state(::std::sync::Arc<$shared>);

        impl $state {
            $vis fn new(shared: $shared) -> Self {
                Self(::std::sync::Arc::new(shared))
            }
        }

        impl ::std::ops::Deref for $state {
            type Target = $shared;

            fn deref(&self) -> &$shared {
                &self.0
            }
        }
    };
}

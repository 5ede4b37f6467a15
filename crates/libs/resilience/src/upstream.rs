//! One called service: its breaker, bulkhead, timeout and retry policy, and the call itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use service_kit::http::{REQUEST_ID, TRACEPARENT};
use tokio::sync::{Semaphore, broadcast};
use tower::ServiceExt as _;

use secrecy::ExposeSecret;

use crate::breaker::{Breaker, Circuit};
use crate::error::{CallError, FAILED_UPSTREAM};
use crate::policy::Policy;
use crate::service_token::TokenSource;

/// How an operator has set the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The breaker decides from what it measures.
    Automatic,
    /// Every call is refused until an operator says otherwise (resilience4j `FORCED_OPEN`).
    ForcedOpen,
    /// Calls always go through and are not measured (resilience4j `DISABLED`).
    Disabled,
}

/// The breaker's state as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    Disabled,
}

impl BreakerState {
    pub const ALL: [BreakerState; 5] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
        }
    }

    /// Whether calls are being refused in this state.
    pub fn is_open(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }

    fn from_circuit(state: Circuit) -> Self {
        match state {
            Circuit::Closed => BreakerState::Closed,
            Circuit::Open => BreakerState::Open,
            Circuit::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// A change of breaker state, for the owner to log, alert on and publish as an ops event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub upstream: &'static str,
    pub from: BreakerState,
    pub to: BreakerState,
}

impl Transition {
    /// The ops event announcing it, as `service` (the caller) saw it: `CircuitBreakerOpened`
    /// or `CircuitBreakerClosed`. Half-open and disabled are visible in the metric; alerting
    /// needs neither, so they announce nothing.
    pub fn notice(&self, service: &str) -> Option<Result<events::Envelope, events::Error>> {
        use contracts::events::{BreakerTransition, CircuitBreakerClosed, CircuitBreakerOpened};
        let payload = BreakerTransition {
            service: service.to_owned(),
            upstream: self.upstream.to_owned(),
            from: self.from.as_str().to_owned(),
            to: self.to.as_str().to_owned(),
        };
        let upstream = self.upstream;
        match self.to {
            to if to.is_open() => Some(events::Envelope::of(
                service,
                upstream,
                0,
                &CircuitBreakerOpened(payload),
            )),
            BreakerState::Closed => Some(events::Envelope::of(
                service,
                upstream,
                0,
                &CircuitBreakerClosed(payload),
            )),
            _ => None,
        }
    }
}

/// The calls a breaker has counted in its sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub calls: usize,
    pub failures: usize,
    pub slow_calls: usize,
}

/// One request to an upstream. Built by the caller, sent by [`Upstream::send`].
#[derive(Clone, Debug)]
pub struct Call {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    idempotent: bool,
}

impl Call {
    /// A call; idempotent by default exactly when its method is (RFC 9110 §9.2.2).
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = method.is_idempotent();
        Self {
            method,
            path: path.into(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            idempotent,
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A JSON POST. Not retried unless declared [`Call::idempotent`] (e.g. keyed by an id the
    /// upstream deduplicates on).
    pub fn post_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self::new(Method::POST, path)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(body)
    }

    /// Declares whether repeating the call is harmless; only then is it retried.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    /// A bearer token (a service token, SEC-14). Invalid header characters drop it, so the
    /// upstream answers 401 rather than the call failing here.
    pub fn bearer(self, token: &str) -> Self {
        match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.header(header::AUTHORIZATION, value)
            }
            Err(_) => self,
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// Why one attempt got no answer, as the breaker sees it.
#[derive(Debug)]
enum Failure {
    Timeout,
    /// No connection was made, so nothing was sent: the next address may take the call,
    /// whether or not it is idempotent.
    Connect(String),
    Transport(String),
}

/// Why one attempt has no response to return.
#[derive(Debug)]
enum Unanswered {
    /// The breaker refused it without a network call; it will probe again after this long.
    Refused(Duration),
    Failed(Failure),
}

/// The network call itself, to one address. An upstream served by this very process
/// (`bourse serve all`) is called in-process, through the same router and middleware its
/// socket serves ([`service_kit::http::in_process`]).
#[derive(Clone)]
struct Transport {
    http: reqwest::Client,
}

impl Transport {
    /// One request to one address, unbounded: [`Upstream::attempt`] bounds the attempt.
    async fn send(&self, request: reqwest::Request) -> Result<reqwest::Response, Failure> {
        let authority = match (
            request.url().host_str(),
            request.url().port_or_known_default(),
        ) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => String::new(),
        };
        match service_kit::http::in_process::router_for(&authority) {
            Some(router) => call_in_process(router, request).await,
            None => self.http.execute(request).await.map_err(|err| {
                // Checked first: a connect timeout is also a timeout, and nothing was sent.
                if err.is_connect() {
                    Failure::Connect(err.to_string())
                } else if err.is_timeout() {
                    Failure::Timeout
                } else {
                    Failure::Transport(err.to_string())
                }
            }),
        }
    }
}

/// An upstream's base URLs: one, or one per replica when nothing in front of them spreads a
/// single name ([`service_kit::http::base_urls`]).
struct Addresses {
    list: Vec<Address>,
    /// Where the next call starts, so calls take the replicas in turn.
    next: AtomicUsize,
    /// The clock `Address::set_aside_until` counts from.
    born: Instant,
    /// How long an address that took no connection or gave no answer in time is tried last:
    /// the breaker's open interval.
    set_aside_for: Duration,
}

struct Address {
    base: String,
    /// Milliseconds after `Addresses::born` until which this address is tried after the others;
    /// 0 when it is not set aside.
    set_aside_until: AtomicU64,
}

impl Addresses {
    fn parse(value: &str, set_aside_for: Duration) -> Result<Self, String> {
        let list: Vec<Address> = service_kit::http::base_urls::split(value)
            .map(|base| {
                reqwest::Url::parse(base)
                    .map_err(|e| format!("{base:?} is not a URL: {e}"))
                    .map(|_| Address {
                        base: base.to_owned(),
                        set_aside_until: AtomicU64::new(0),
                    })
            })
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err("no base URL".to_owned());
        }
        Ok(Self {
            list,
            next: AtomicUsize::new(0),
            born: Instant::now(),
            set_aside_for,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The order one attempt tries the addresses of a list in: from the next in turn, those
    /// set aside after the others.
    fn in_turn(&self) -> Vec<&Address> {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now();
        let rotated = self.list[start..].iter().chain(&self.list[..start]);
        let (mut ready, aside): (Vec<&Address>, Vec<&Address>) =
            rotated.partition(|address| address.set_aside_until.load(Ordering::Relaxed) <= now);
        ready.extend(aside);
        ready
    }

    /// Sets `address` aside after it took no connection or gave no answer in time; true when
    /// it was not already.
    fn set_aside(&self, address: &Address) -> bool {
        let until = self
            .now()
            .saturating_add(u64::try_from(self.set_aside_for.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        address.set_aside_until.swap(until, Ordering::Relaxed) <= self.now()
    }
}

/// Hands `request` to `router` as its socket would, and reads the whole answer.
async fn call_in_process(
    router: axum::Router,
    request: reqwest::Request,
) -> Result<reqwest::Response, Failure> {
    // A `Call` carries its body as bytes; there is no streaming body to hand over.
    let body = match request.body() {
        None => Bytes::new(),
        Some(body) => Bytes::copy_from_slice(body.as_bytes().ok_or_else(|| {
            Failure::Transport("a streaming body cannot be called in-process".to_owned())
        })?),
    };
    let mut forwarded = http::Request::builder()
        .method(request.method().clone())
        .uri(request.url().as_str())
        .body(axum::body::Body::from(body))
        .map_err(|e| Failure::Transport(e.to_string()))?;
    *forwarded.headers_mut() = request.headers().clone();
    service_kit::http::in_process::prepare(&mut forwarded);
    let Ok(answer) = router.oneshot(forwarded).await;
    let (parts, body) = answer.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?;
    Ok(reqwest::Response::from(http::Response::from_parts(
        parts, bytes,
    )))
}

/// What a call's outcome says about the upstream's health.
enum Verdict {
    /// Any answer but a 5xx: a 4xx is the caller's mistake.
    Healthy,
    /// A 5xx, or no answer at all.
    Failed,
    /// A 5xx naming a failed upstream of the upstream's own ([`FAILED_UPSTREAM`]): it
    /// answered, and its own breaker for that dependency is the one to open (ADR 0031).
    ForADependency,
}

fn verdict(result: &Result<reqwest::Response, Failure>) -> Verdict {
    match result {
        Ok(response) if !response.status().is_server_error() => Verdict::Healthy,
        Ok(response) if response.headers().contains_key(FAILED_UPSTREAM) => Verdict::ForADependency,
        Ok(_) | Err(_) => Verdict::Failed,
    }
}

const AUTOMATIC: u8 = 0;
const FORCED_OPEN: u8 = 1;
const DISABLED: u8 = 2;

struct Inner {
    /// The service making the calls: a label, so that services sharing a process (`serve all`)
    /// keep their own series for the same upstream.
    caller: &'static str,
    name: &'static str,
    addresses: Addresses,
    policy: Policy,
    transport: Transport,
    breaker: Breaker,
    bulkhead: Arc<Semaphore>,
    mode: AtomicU8,
    transitions: broadcast::Sender<Transition>,
    /// Service tokens for this upstream (audience = its name), when it requires them.
    tokens: Option<Arc<TokenSource>>,
}

/// The client for one upstream service. Cheap to clone; clones share breaker and bulkhead.
#[derive(Clone)]
pub struct Upstream(Arc<Inner>);

impl Upstream {
    /// `caller` is the calling service and `name` the upstream: both label metrics, `name`
    /// also logs and problems. `base_url` is one base URL, or several separated by commas
    /// (replicas of the upstream, [`service_kit::http::base_urls`]): calls then take them in
    /// turn, and an attempt that gets no connection from one tries the next before it counts
    /// as a failure.
    pub fn new(
        caller: &'static str,
        name: &'static str,
        base_url: impl Into<String>,
        http: reqwest::Client,
        policy: Policy,
    ) -> Result<Self, String> {
        Self::build(caller, name, base_url.into(), http, policy, None)
    }

    /// An upstream whose routes need a service token (its `/internal/*` routes, SEC-14): every
    /// call carries a token from `tokens` for the audience `name`.
    /// The caller is the service the tokens are for.
    pub fn authenticated(
        name: &'static str,
        base_url: impl Into<String>,
        http: reqwest::Client,
        policy: Policy,
        tokens: Arc<TokenSource>,
    ) -> Result<Self, String> {
        Self::build(
            tokens.client(),
            name,
            base_url.into(),
            http,
            policy,
            Some(tokens),
        )
    }

    fn build(
        caller: &'static str,
        name: &'static str,
        base_url: String,
        http: reqwest::Client,
        policy: Policy,
        tokens: Option<Arc<TokenSource>>,
    ) -> Result<Self, String> {
        let (transitions, _) = broadcast::channel(64);
        let publish = transitions.clone();
        let breaker = Breaker::new(
            policy.breaker.clone(),
            Box::new(move |from, to| {
                announce(
                    &publish,
                    caller,
                    Transition {
                        upstream: name,
                        from: BreakerState::from_circuit(from),
                        to: BreakerState::from_circuit(to),
                    },
                );
            }),
        )
        .map_err(|e| format!("circuit breaker settings for {name}: {e}"))?;
        let addresses = Addresses::parse(&base_url, policy.breaker.open_for)
            .map_err(|e| format!("the address of {name}: {e}"))?;
        let transport = Transport { http };
        set_state_gauge(caller, name, BreakerState::Closed);
        // The counters of what only goes wrong are born at zero, so a dashboard shows "none
        // yet" rather than "No data" until the first refusal or retry.
        for outcome in ["rejected", "saturated"] {
            metrics::counter!("resilience_calls_total",
                "service" => caller, "upstream" => name, "outcome" => outcome)
            .increment(0);
        }
        metrics::counter!("resilience_retries_total", "service" => caller, "upstream" => name)
            .increment(0);
        metrics::counter!("resilience_failovers_total", "service" => caller, "upstream" => name)
            .increment(0);
        Ok(Self(Arc::new(Inner {
            caller,
            name,
            addresses,
            bulkhead: Arc::new(Semaphore::new(policy.max_concurrent)),
            policy,
            transport,
            breaker,
            mode: AtomicU8::new(AUTOMATIC),
            transitions,
            tokens,
        })))
    }

    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The base URLs calls go to, in the order given.
    pub fn base_urls(&self) -> impl Iterator<Item = &str> {
        self.0.addresses.list.iter().map(|a| a.base.as_str())
    }

    /// Breaker transitions from now on (a lagging receiver loses the oldest, never blocks calls).
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.0.transitions.subscribe()
    }

    /// Calls `announce` with the [ops event](Transition::notice) of each transition that has
    /// one (opened, closed), in a task of `tasks` that ends with the service: how a service
    /// turns its breakers' transitions into ops events. The caller publishes it (through its
    /// outbox, or straight to Redis when it has no database).
    pub fn spawn_announcer<F, Fut>(&self, tasks: &service_kit::Supervisor, announce: F)
    where
        F: Fn(events::Envelope) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (upstream, announce) = (self.clone(), Arc::new(announce));
        let caller = self.0.caller;
        let name = format!("{} breaker notices", self.0.name);
        tasks.spawn(name, move |shutdown| {
            let (mut transitions, announce) = (upstream.transitions(), announce.clone());
            async move {
                loop {
                    let transition = tokio::select! {
                        received = transitions.recv() => match received {
                            Ok(transition) => transition,
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                tracing::warn!(missed, "breaker notices fell behind; some were not announced");
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                        () = shutdown.triggered() => break,
                    };
                    match transition.notice(caller) {
                        Some(Ok(notice)) => announce(notice).await,
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "a breaker notice did not encode");
                        }
                        None => {}
                    }
                }
            }
        });
    }

    pub fn mode(&self) -> Mode {
        match self.0.mode.load(Ordering::Acquire) {
            FORCED_OPEN => Mode::ForcedOpen,
            DISABLED => Mode::Disabled,
            _ => Mode::Automatic,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.mode() {
            Mode::ForcedOpen => BreakerState::ForcedOpen,
            Mode::Disabled => BreakerState::Disabled,
            Mode::Automatic => BreakerState::from_circuit(self.0.breaker.circuit()),
        }
    }

    /// What the breaker has measured in its current window (for operators and tests).
    pub fn window(&self) -> Window {
        let totals = self.0.breaker.totals();
        Window {
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow_calls,
        }
    }

    /// Sets the operator's override. Back to automatic, the breaker starts closed and empty.
    pub fn set_mode(&self, mode: Mode) {
        let from = self.state();
        if mode == Mode::Automatic {
            self.0.breaker.reset();
        }
        let code = match mode {
            Mode::Automatic => AUTOMATIC,
            Mode::ForcedOpen => FORCED_OPEN,
            Mode::Disabled => DISABLED,
        };
        self.0.mode.store(code, Ordering::Release);
        let to = self.state();
        if from != to {
            announce(
                &self.0.transitions,
                self.0.caller,
                Transition {
                    upstream: self.0.name,
                    from,
                    to,
                },
            );
        }
    }

    /// Sends `call`: bulkhead, breaker, timeout, and retries if the call is idempotent.
    /// Any answer, 4xx and 5xx included, is `Ok`; `Err` means there was no usable answer.
    pub async fn send(&self, call: Call) -> Result<reqwest::Response, CallError> {
        let inner = &self.0;
        let (caller, name) = (inner.caller, inner.name);
        let mode = self.mode();
        if mode == Mode::ForcedOpen {
            count(caller, name, "rejected");
            return Err(CallError::Open {
                upstream: name,
                retry_after: inner.policy.breaker.open_for,
            });
        }
        let Ok(_permit) = inner.bulkhead.clone().try_acquire_owned() else {
            count(caller, name, "saturated");
            return Err(CallError::Saturated { upstream: name });
        };
        let call = match &inner.tokens {
            // Boxed: fetching a token is itself a call through an `Upstream` (auth's).
            Some(tokens) => match Box::pin(tokens.token(name)).await {
                Ok(token) => call.bearer(token.expose_secret()),
                Err(err) => {
                    count(caller, name, "no_service_token");
                    return Err(CallError::NoServiceToken {
                        upstream: name,
                        detail: err.to_string(),
                    });
                }
            },
            None => call,
        };
        let attempts = if call.idempotent {
            1 + inner.policy.retries
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = match mode {
                Mode::Disabled => self.attempt(&call).await.map_err(Unanswered::Failed),
                _ => match inner.breaker.admit() {
                    Err(retry_after) => Err(Unanswered::Refused(retry_after)),
                    Ok(admitted) => {
                        let result = self.attempt(&call).await;
                        match verdict(&result) {
                            Verdict::Healthy => admitted.finish(false, started.elapsed()),
                            Verdict::Failed => admitted.finish(true, started.elapsed()),
                            Verdict::ForADependency => admitted.finish_for_a_dependency(),
                        }
                        result.map_err(Unanswered::Failed)
                    }
                },
            };
            let (outcome, retryable) = match &result {
                Ok(response) if matches!(response.status().as_u16(), 502..=504) => {
                    ("server_error", true)
                }
                Ok(response) if response.status().is_server_error() => ("server_error", false),
                Ok(_) => ("response", false),
                Err(Unanswered::Refused(_)) => ("rejected", false),
                Err(Unanswered::Failed(Failure::Timeout)) => ("timeout", true),
                Err(Unanswered::Failed(Failure::Connect(_) | Failure::Transport(_))) => {
                    ("unreachable", true)
                }
            };
            count(caller, name, outcome);
            metrics::histogram!("resilience_call_duration_seconds",
                "service" => caller, "upstream" => name, "outcome" => outcome)
            .record(started.elapsed());
            if !retryable || attempt >= attempts {
                return match result {
                    Ok(response) => {
                        if response.status() == http::StatusCode::UNAUTHORIZED
                            && let Some(tokens) = &inner.tokens
                        {
                            // Refused (a rotated key, say): the next call fetches a new one.
                            tokens.forget(name);
                        }
                        Ok(response)
                    }
                    Err(Unanswered::Refused(retry_after)) => Err(CallError::Open {
                        upstream: name,
                        retry_after,
                    }),
                    Err(Unanswered::Failed(Failure::Timeout)) => Err(CallError::Timeout {
                        upstream: name,
                        timeout: inner.policy.timeout,
                    }),
                    Err(Unanswered::Failed(
                        Failure::Connect(detail) | Failure::Transport(detail),
                    )) => Err(CallError::Unreachable {
                        upstream: name,
                        detail,
                    }),
                };
            }
            metrics::counter!("resilience_retries_total", "service" => caller, "upstream" => name)
                .increment(1);
            tokio::time::sleep(inner.policy.backoff.delay(attempt - 1)).await;
        }
    }

    /// One attempt, bounded by the timeout: to the addresses in turn until one takes a
    /// connection. Only when none does is it a failure. An address that took the request and
    /// gave no answer in time is set aside as well (a replica paused or stuck), so the calls
    /// after this one go to the others first instead of timing out every other time.
    async fn attempt(&self, call: &Call) -> Result<reqwest::Response, Failure> {
        let inner = &self.0;
        // The address the attempt was waiting on when its time ran out.
        let mut waiting_on: Option<&Address> = None;
        let tried = async {
            // One address, the usual case, takes no turn and allocates nothing.
            let (one, several);
            let order: &[&Address] = match inner.addresses.list.as_slice() {
                [only] => {
                    one = [only];
                    &one
                }
                _ => {
                    several = inner.addresses.in_turn();
                    &several
                }
            };
            let mut refused = String::new();
            for (i, &address) in order.iter().enumerate() {
                if i > 0 {
                    metrics::counter!("resilience_failovers_total",
                        "service" => inner.caller, "upstream" => inner.name)
                    .increment(1);
                }
                let request = self
                    .request(call, &address.base)
                    .map_err(Failure::Transport)?;
                waiting_on = Some(address);
                match inner.transport.send(request).await {
                    Err(Failure::Connect(detail)) => {
                        if inner.addresses.set_aside(address) && inner.addresses.list.len() > 1 {
                            tracing::warn!(upstream = inner.name, address = %address.base,
                                error = %detail, "an address took no connection; tried last for a while");
                        }
                        refused = detail;
                    }
                    Err(Failure::Timeout) => return Err(Failure::Timeout),
                    outcome => {
                        // Read first: a store on every call would contend across threads.
                        if address.set_aside_until.load(Ordering::Relaxed) != 0 {
                            address.set_aside_until.store(0, Ordering::Relaxed);
                        }
                        return outcome;
                    }
                }
            }
            Err(Failure::Connect(refused))
        };
        let outcome = match tokio::time::timeout(inner.policy.timeout, tried).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout),
        };
        if let (Err(Failure::Timeout), Some(address)) = (&outcome, waiting_on)
            && inner.addresses.list.len() > 1
            && inner.addresses.set_aside(address)
        {
            tracing::warn!(upstream = inner.name, address = %address.base,
                "an address gave no answer in time; tried last for a while");
        }
        outcome
    }

    /// The request of one attempt to `base`, carrying the current request's id and trace
    /// (OBS-06).
    fn request(&self, call: &Call, base: &str) -> Result<reqwest::Request, String> {
        let mut headers = call.headers.clone();
        if let Some(context) = service_kit::http::observe::current_context() {
            if let Ok(id) = HeaderValue::from_str(&context.request_id) {
                headers.insert(REQUEST_ID, id);
            }
            if let Ok(traceparent) = HeaderValue::from_str(&context.trace.traceparent()) {
                headers.insert(TRACEPARENT, traceparent);
            }
        }
        self.0
            .transport
            .http
            .request(call.method.clone(), format!("{base}{}", call.path))
            .headers(headers)
            .body(call.body.clone())
            .build()
            .map_err(|e| e.to_string())
    }
}

fn count(caller: &'static str, upstream: &'static str, outcome: &'static str) {
    metrics::counter!("resilience_calls_total",
        "service" => caller, "upstream" => upstream, "outcome" => outcome)
    .increment(1);
}

/// Records a transition: the state gauge, a log line, and the broadcast for ops events.
fn announce(
    transitions: &broadcast::Sender<Transition>,
    caller: &'static str,
    transition: Transition,
) {
    set_state_gauge(caller, transition.upstream, transition.to);
    if transition.to.is_open() {
        tracing::warn!(
            upstream = transition.upstream,
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            "circuit breaker opened"
        );
    } else {
        tracing::info!(
            upstream = transition.upstream,
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            "circuit breaker state changed"
        );
    }
    // Nobody listening is fine: the metric and the log above still tell the story.
    let _ = transitions.send(transition);
}

/// `resilience_breaker_state{service, upstream, state}`: 1 for the current state, 0 for the
/// others.
fn set_state_gauge(caller: &'static str, upstream: &'static str, current: BreakerState) {
    for state in BreakerState::ALL {
        metrics::gauge!("resilience_breaker_state",
            "service" => caller, "upstream" => upstream, "state" => state.as_str())
        .set(if state == current { 1.0 } else { 0.0 });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use contracts::events::{CircuitBreakerClosed, CircuitBreakerOpened};

    fn transition(from: BreakerState, to: BreakerState) -> Transition {
        Transition {
            upstream: "risk",
            from,
            to,
        }
    }

    #[test]
    fn opening_and_closing_are_announced_as_the_caller_saw_them_and_nothing_else() {
        let opened = transition(BreakerState::Closed, BreakerState::Open)
            .notice("orders")
            .unwrap()
            .unwrap();
        let CircuitBreakerOpened(seen) = opened.decode().unwrap();
        assert_eq!(
            (seen.service.as_str(), seen.upstream.as_str()),
            ("orders", "risk")
        );
        assert_eq!((seen.from.as_str(), seen.to.as_str()), ("closed", "open"));
        assert_eq!(opened.producer, "orders");

        let closed = transition(BreakerState::HalfOpen, BreakerState::Closed)
            .notice("orders")
            .unwrap()
            .unwrap();
        assert!(closed.decode::<CircuitBreakerClosed>().is_ok());

        assert!(
            transition(BreakerState::Open, BreakerState::HalfOpen)
                .notice("orders")
                .is_none(),
            "half-open is for the metric, not for alerting"
        );
    }
}

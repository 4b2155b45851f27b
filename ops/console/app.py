"""The operators' web console of one region (Starlette, Jinja2 templates, htmx, uPlot).

A console serves one region: it signs in only that region's registered operators
(``console.auth``), reads only that region's store, and sends operator actions only to that
region's actors, so an EU account is shown only to operators of the EU region. Roles are
checked here before anything is sent (``core.operators.role_problem``) and again by the nodes,
which refuse any action its operator's key did not sign. Every page that reads the store first
records the read in the region's audit (``operator_reads``, signed with the operator's key
where the console holds it): a read that cannot be recorded does not happen.

Operator actions (claim, decide, override, clear, approve, appeals) are the very signals the
``ops`` commands send (``ops.actions``), signed with the operator's key from the console's state
folder: the decision lands in the account's history and reaches the inline adapters like any
other. An approval or rejection is checked against the account's state before it is sent
(``console.approvals``): nobody approves their own request (refused with a 403, recorded in the
region's audit as ``console.refused.own-approval``, counted and logged), and one that would
change nothing (lapsed, superseded, another level) is refused as a bad request.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from safeguards.adapters.operators import OperatorSigner
from safeguards.core.errors import InvalidInput, SafeguardsError, VersionGap
from safeguards.core.events import Observation, OperatorActionTaken
from safeguards.core.ids import validate_account_id
from safeguards.ops.console import approvals, pages
from safeguards.ops.console.actions import ACTIONS, ActionRefused, console_action
from safeguards.ops.console.auth import ConsoleAuth, Session, SignInRefused
from safeguards.ops.console.metrics import ConsoleMetrics, MeasuredApp
from safeguards.ops.console.reads import (
    FALLBACK_ROWS,
    MarkerCache,
    PlotCache,
    fallback_health,
    gate_health,
    new_health,
    search_accounts,
    store_health,
    stream_health,
)
from safeguards.ops.explain import NotAnEnforcement

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PRE_CSRF = "sg_console_pre"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(slots=True)
class ConsoleConfig:
    region: str
    database_url: str
    nats_url: str | None = None
    partitions: int = 16
    gate_metrics: list[str] = field(default_factory=list)  # the inline adapters' /metrics
    secure_cookies: bool = False  # behind TLS: cookies only over https


@dataclass(slots=True)
class Viewer:
    session: Session
    role: str

    @property
    def operator(self) -> str:
        return self.session.operator


def build_console(config: ConsoleConfig, *, auth: ConsoleAuth | None = None,
                  store: Any = None) -> Any:
    """The console's ASGI app (measured); ``store``: a region store to use instead of opening
    one on ``config.database_url``."""
    from safeguards.adapters.store import PostgresEventStore

    auth = auth or ConsoleAuth(config.region)
    metrics = ConsoleMetrics()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    templates = Jinja2Templates(env=env)
    held: dict[str, Any] = {"store": store}
    plots = PlotCache()
    marked = MarkerCache(pages.MARKER_TYPES, pages.MARKERS)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if held["store"] is not None:
            yield
            return
        async with PostgresEventStore(config.region, config.database_url,
                                      pool_size=4) as opened:
            held["store"] = opened
            yield

    def page(request: Request, name: str, viewer: Viewer | None, status: int = 200,
             **context: Any) -> Response:
        return templates.TemplateResponse(
            request, name, {"region": config.region, "viewer": viewer, **context},
            status_code=status, headers=SECURITY_HEADERS)

    def signed_in(request: Request) -> Viewer | None:
        found = auth.session(request.cookies.get(auth.cookie_name), time.time())
        return None if found is None else Viewer(*found)

    async def audited(viewer: Viewer, command: str, subject: str) -> Any:
        """The store, once this read is in the region's audit."""
        try:
            signature = OperatorSigner(viewer.operator).sign_read(config.region, command,
                                                                  subject)
        except InvalidInput:
            signature = None  # the console does not hold this operator's key: unsigned
        store = held["store"]
        await store.record_read(viewer.operator, command, subject, signature)
        metrics.reads.labels(command).inc()
        return store

    Handler = Callable[[Request, Viewer], Awaitable[Response]]

    def reading(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page for signed-in operators: anonymous visitors go to the sign-in page; bad
        input is a 400 page, a store that cannot answer a 503 page."""
        async def endpoint(request: Request) -> Response:
            viewer = signed_in(request)
            if viewer is None:
                if request.headers.get("HX-Request"):
                    return Response(status_code=401, headers={"HX-Redirect": "/login"})
                return RedirectResponse("/login", 303)
            if request.method == "POST":
                form = await request.form()
                presented = request.headers.get("X-CSRF-Token") or form.get("csrf")
                if not auth.csrf_ok(viewer.session, str(presented) if presented else None):
                    return page(request, "error.html", viewer, 403,
                                message="the form's CSRF token is missing or wrong: reload")
            try:
                return await handler(request, viewer)
            except ActionRefused as exc:
                return page(request, "error.html", viewer, 403, message=str(exc))
            except (InvalidInput, NotAnEnforcement) as exc:
                return page(request, "error.html", viewer, 400, message=str(exc))
            except VersionGap as exc:  # before a retention base: those events are gone
                return page(request, "error.html", viewer, 410, message=str(exc))
            except (OSError, TimeoutError) as exc:  # the region's NATS, for an action
                log.warning("console: could not reach the region's bus", exc_info=True)
                return page(request, "error.html", viewer, 503,
                            message=f"the region's bus could not be reached "
                                    f"({type(exc).__name__}); nothing was sent")
            except SafeguardsError as exc:
                log.warning("console: the region's store or bus failed: %s", exc,
                            exc_info=True)
                return page(request, "error.html", viewer, 503,
                            message=f"the region's store could not answer ({type(exc).__name__})")
        return endpoint

    def account_param(request: Request) -> str:
        return validate_account_id(request.query_params.get("account", ""))

    async def login_page(request: Request) -> Response:
        pre = request.cookies.get(PRE_CSRF) or secrets.token_urlsafe(18)
        response = page(request, "login.html", None, pre=pre,
                        token=request.query_params.get("token", "")[:400], error=None)
        response.set_cookie(PRE_CSRF, pre, max_age=900, httponly=True, samesite="strict",
                            secure=config.secure_cookies)
        return response

    async def login(request: Request) -> Response:
        form = await request.form()
        pre = request.cookies.get(PRE_CSRF)
        if not pre or form.get("pre") != pre:
            metrics.sign_ins.labels("csrf").inc()
            return page(request, "login.html", None, 403, pre=pre or "", token="",
                        error="the sign-in form expired: reload the page")
        try:
            session, cookie = auth.sign_in(str(form.get("token", "")), time.time())
        except SignInRefused as exc:
            metrics.sign_ins.labels("refused").inc()
            return page(request, "login.html", None, 403, pre=pre, token="", error=str(exc))
        metrics.sign_ins.labels("ok").inc()
        log.info("console %s: %s signed in", config.region, session.operator)
        response = RedirectResponse("/accounts", 303)
        response.set_cookie(auth.cookie_name, cookie, max_age=int(session.expires_at -
                                                                  time.time()),
                            httponly=True, samesite="strict", secure=config.secure_cookies)
        response.delete_cookie(PRE_CSRF)
        return response

    async def logout(request: Request, viewer: Viewer) -> Response:
        auth.sign_out(viewer.session)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(auth.cookie_name)
        return response

    async def home(request: Request) -> Response:
        return RedirectResponse("/accounts", 303)

    async def accounts(request: Request, viewer: Viewer) -> Response:
        q = request.query_params.get("q", "")
        found: list[str] = []
        if q.strip():
            store = await audited(viewer, "console.search", f"search:{q.strip()[:120]}")
            found = await search_accounts(store.engine, q)
        return page(request, "accounts.html", viewer, q=q, found=found)

    async def timeline(request: Request, viewer: Viewer) -> Response:
        account = account_param(request)
        store = await audited(viewer, "console.timeline", account)
        view = await pages.timeline(store, account, plots, marked)
        return page(request, "timeline.html", viewer, 200 if view["found"] else 404,
                    account=account, **view)

    async def events(request: Request, viewer: Viewer) -> Response:
        account = account_param(request)
        before = request.query_params.get("before", "")
        if not before.isdigit():
            raise InvalidInput("before must be a version")
        store = await audited(viewer, "console.history", account)
        view = await pages.older_events(store, account, int(before))
        return page(request, "_events.html", viewer, account=account, **view)

    async def state(request: Request, viewer: Viewer) -> Response:
        account = account_param(request)
        store = await audited(viewer, "console.state-at", account)
        text = await pages.state_at(store, account, request.query_params.get("at", ""))
        return page(request, "_state.html", viewer, summary=text,
                    at=request.query_params.get("at", ""))

    async def explain(request: Request, viewer: Viewer) -> Response:
        account = account_param(request)
        version = request.query_params.get("version", "")
        if not version.isdigit():
            raise InvalidInput("version must be a number")
        store = await audited(viewer, "console.explain", account)
        text = await pages.explanation(store, account, int(version))
        return page(request, "explain.html", viewer, account=account, version=version,
                    text=text)

    async def linked(request: Request, viewer: Viewer) -> Response:
        account = account_param(request)
        store = await audited(viewer, "console.linked", account)
        return page(request, "linked.html", viewer, account=account,
                    **await pages.linked(store, account))

    async def queue(request: Request, viewer: Viewer) -> Response:
        store = await audited(viewer, "console.queue", f"queue:{config.region}")
        reviews = await store.open_reviews(limit=200)
        states = await store.load_many([r.account_id for r in reviews])
        return page(request, "queue.html", viewer,
                    rows=[(r, states[r.account_id]) for r in reviews])

    async def approvals_page(request: Request, viewer: Viewer) -> Response:
        store = await audited(viewer, "console.approvals", f"approvals:{config.region}")
        rows = await approvals.pending_approvals(store, datetime.now(UTC))
        return page(request, "approvals.html", viewer, rows=rows)

    async def appeals_page(request: Request, viewer: Viewer) -> Response:
        store = await audited(viewer, "console.appeals", f"appeals:{config.region}")
        return page(request, "appeals.html", viewer, rows=await approvals.open_appeals(store))

    async def act(request: Request, viewer: Viewer) -> Response:
        form = await request.form()
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}

        async def approvable(account: str, observation: Observation) -> None:
            if not (isinstance(observation, OperatorActionTaken)
                    and observation.action in ("approve", "reject")):
                return
            store = await audited(viewer, f"console.{observation.action}-check", account)
            state = await store.load(account)
            try:
                if observation.action == "reject":
                    approvals.check_rejection(state, observation.level, datetime.now(UTC))
                else:
                    approvals.check_approval(state, viewer.operator, observation.level,
                                             datetime.now(UTC))
            except approvals.ApprovalProblem as exc:
                if not exc.own:
                    raise InvalidInput(str(exc)) from None
                # kept: who tried to approve their own request, on which account, and when
                await audited(viewer, "console.refused.own-approval", account)
                metrics.actions.labels("approve", "refused_own").inc()
                log.warning("console %s: %s tried to approve their own request (refused)",
                            config.region, viewer.operator)
                raise ActionRefused(str(exc)) from None

        sent = await console_action(config, viewer.operator, viewer.role, fields,
                                    before_send=approvable)
        metrics.actions.labels(sent.action, "sent").inc()
        return page(request, "_sent.html", viewer, sent=sent)

    async def health(request: Request, viewer: Viewer) -> Response:
        store = await audited(viewer, "console.health", f"region:{config.region}")
        figures = new_health()
        await store_health(store.engine, figures)
        await fallback_health(store.engine, config.region, figures)
        await stream_health(config.nats_url, config.region, figures)
        await gate_health(config.gate_metrics, figures)
        return page(request, "health.html", viewer, health=figures, fallback_rows=FALLBACK_ROWS)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/", home), Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", reading(logout), methods=["POST"]),
        Route("/accounts", reading(accounts)), Route("/timeline", reading(timeline)),
        Route("/events", reading(events)), Route("/state", reading(state)),
        Route("/explain", reading(explain)), Route("/linked", reading(linked)),
        Route("/queue", reading(queue)), Route("/approvals", reading(approvals_page)),
        Route("/appeals", reading(appeals_page)),
        Route("/action", reading(act), methods=["POST"]),
        Route("/health", reading(health)), Route("/metrics", metrics_endpoint),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    app.state.actions = ACTIONS
    return MeasuredApp(app, metrics)

"""Services and providers: the catalog's list and its changes, and the upstream providers —
add (the key masked from then on), enable / disable, retry, and a catalog import shown as a
preview before it is confirmed, or a sync — through the CLI's domain functions."""
from collections import Counter

from flask import render_template, request, url_for

from .. import activity, db, provider_catalog, providers, services
from ..fulfilment import provider_client
from ..money import AmountError, BASIS_POINTS, parse_amount, parse_percent
from .base import actor, apply, bp, form, needs, refuse, whole

MAX_MARKUP_BP = 1000 * BASIS_POINTS // 100


@bp.route("/services")
@needs("read")
def services_list():
    with db.read() as conn:
        rows = services.list_all(conn)
        names = {row.id: row.name for row in providers.list_all(conn)}
    return render_template("console/services.html", rows=rows, provider_names=names)


def _service_values():
    values = {"name": form("name") or None, "category": form("category") or None,
              "min_quantity": whole(form("min"), "min", 1),
              "max_quantity": whole(form("max"), "max", 1),
              "refill_days": whole(form("refill_days"), "refill days")}
    if form("rate"):
        try:
            values["rate"] = parse_amount(form("rate"))
        except AmountError as error:
            raise services.ServiceError(str(error)) from None
    for flag in ("cancel", "dripfeed"):  # "yes" / "no"; anything else keeps it as it is
        if form(flag) in ("yes", "no"):
            values[flag] = form(flag) == "yes"
    values = {k: v for k, v in values.items() if v is not None}
    fixed = whole(form("fixed_quantity"), "fixed quantity")
    if fixed is not None:  # 0: the partner chooses (as `service update --fixed-quantity 0`)
        values["fixed_quantity"] = fixed or None
    return values


@bp.route("/services", methods=["POST"])
@needs("service.edit")
def service_create():
    def work(conn):
        values = _service_values()
        new_id = services.add(conn, **values)
        return "service.add", new_id, None, values, f"service {new_id} added"
    return apply(work, url_for("console.services_list"))


@bp.route("/services/<int:service_id>", methods=["POST"])
@needs("service.edit")
def service_update(service_id):
    """A rate set here drops the markup, as `service update --rate` does; a rate below the
    provider's is refused by services.check_definition with its reason."""
    def work(conn):
        values = _service_values()
        if "rate" in values:
            values["markup_bp"] = None
        before = services.get(conn, service_id)
        services.update_service(conn, service_id, **values)
        return ("service.update", service_id, {k: getattr(before, k) for k in values}, values,
                f"service {service_id} updated")
    return apply(work, url_for("console.services_list"))


@bp.route("/services/<int:service_id>/active", methods=["POST"])
@needs("service.edit")
def service_active(service_id):
    active = form("active") == "yes"

    def work(conn):
        services.update_service(conn, service_id, active=active)
        return ("service.enable" if active else "service.disable", service_id, None, None,
                f"service {service_id} {'enabled' if active else 'disabled'}")
    return apply(work, url_for("console.services_list"))


@bp.route("/services/<int:service_id>/link", methods=["POST"])
@needs("service.edit")
def service_link(service_id):
    if form("manual") == "yes":
        def work(conn):
            before = provider_catalog.unlink(conn, service_id)
            return ("service.manual", service_id, {"provider_id": before.provider_id,
                                                   "provider_service": before.provider_service},
                    {"provider_id": None}, f"service {service_id} is fulfilled by hand")
        return apply(work, url_for("console.services_list"))
    name, provider_service = form("provider"), form("provider_service")
    try:
        if not (name and provider_service):
            raise services.ServiceError("give both the provider and its service id")
        with db.read() as conn:
            provider = providers.require(conn, name)
        reply = _catalog_reply(provider)
    except ValueError as error:
        return refuse(str(error), url_for("console.services_list"))

    def link(conn):
        step = provider_catalog.link(conn, service_id, provider.id, reply, provider_service)
        return ("service.link", service_id, None, {"provider": provider.name,
                                                   "provider_service": provider_service},
                f"service {service_id} linked to provider {provider.name} service "
                f"{step.provider_service}")
    return apply(link, url_for("console.services_list"))


@bp.route("/providers")
@needs("read")
def providers_list():
    with db.read() as conn:
        rows = providers.list_all(conn)
        counts = providers.counts(conn)
    return render_template("console/providers.html", rows=rows, counts=counts,
                           mask=providers.mask_key)


@bp.route("/providers", methods=["POST"])
@needs("provider.edit")
def provider_add():
    def work(conn):
        providers.add(conn, form("name"), form("url"), form("key"))
        return ("provider.add", form("name"), None, {"url": form("url")},
                f"provider {form('name')} added (key {providers.mask_key(form('key'))})")
    return apply(work, url_for("console.providers_list"))


@bp.route("/providers/<name>/<change>", methods=["POST"])
@needs("provider.edit")
def provider_change(name, change):
    actions = {"enable": lambda c: providers.set_enabled(c, name, True),
               "disable": lambda c: providers.set_enabled(c, name, False),
               "retry": lambda c: providers.retry(c, name)}
    if change not in actions:
        return render_template("console/error.html", title="Not found",
                               message="There is no such action."), 404

    def work(conn):
        result = actions[change](conn)
        return (f"provider.{change}", name, None, {"result": result} if result else None,
                f"provider {name}: {change}" + (f", {result} hand-overs due now"
                                                if change == "retry" else "d"))
    return apply(work, url_for("console.providers_list"))


def _catalog_reply(provider):
    """The provider's `services` reply; a failure is the domain's error, key masked."""
    try:
        return provider_client.call(provider.url, provider.api_key, "services")
    except provider_client.ProviderError as error:
        raise providers.ProviderError(providers.redact(f"provider {provider.name}: {error}",
                                                       provider.api_key)) from None


def _markup():
    try:
        return parse_percent(form("markup") or request.args.get("markup", ""),
                             maximum_bp=MAX_MARKUP_BP)
    except AmountError as error:
        raise providers.ProviderError(str(error)) from None


@bp.route("/providers/<name>/import", methods=["POST"])
@needs("provider.edit")
def provider_import(name):
    """Without `confirm`: the preview (nothing written). With it: the import, in one
    transaction, with its list of what was done."""
    confirm = form("confirm") == "yes"
    categories = [c for c in request.form.getlist("category") if c.strip()]
    try:
        markup_bp = _markup()
        with db.read() as conn:
            provider = providers.require(conn, name)
        reply = _catalog_reply(provider)
        if not confirm:
            with db.read() as conn:
                steps = provider_catalog.preview_import(conn, provider.id, reply, markup_bp,
                                                        categories)
        else:
            with db.write() as conn:
                steps = provider_catalog.import_services(conn, provider.id, reply, markup_bp,
                                                         categories)
                activity.record(conn, actor(), "provider.import", provider.name,
                                after={"markup_bp": markup_bp,
                                       **Counter(step.action for step in steps)})
    except ValueError as error:
        return render_template("console/import.html", name=name, error=str(error), steps=[],
                               confirm=confirm, markup=form("markup")), 400
    return render_template("console/import.html", name=name, steps=steps, confirm=confirm,
                           markup=form("markup"), counts=Counter(s.action for s in steps),
                           categories=categories, error=None)


@bp.route("/providers/<name>/sync", methods=["POST"])
@needs("provider.edit")
def provider_sync(name):
    """The provider is asked before the write transaction begins (no lock held over HTTP)."""
    def fetch():
        with db.read() as conn:
            provider = providers.require(conn, name)
        return provider, _catalog_reply(provider)

    def work(conn):
        provider, reply = fetched
        steps = provider_catalog.sync_services(conn, provider.id, reply)
        count = Counter(step.action for step in steps)
        changes = [f"{step.local_id}: {change}" for step in steps for change in step.changes]
        return ("provider.sync", name, None, {**count, "changes": changes[:50]},
                f"provider {name}: {len(steps)} linked services, {count['update']} changed, "
                f"{count['deactivate']} deactivated" + (": " + "; ".join(changes[:20]) if changes else ""))
    try:
        fetched = fetch()
    except ValueError as error:
        return refuse(str(error), url_for("console.providers_list"))
    return apply(work, url_for("console.providers_list"))

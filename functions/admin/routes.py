"""The cluster admin API: node enrollment and heartbeats, clusters and pools, settings and CoeOS, cloud
providers, model sync; one module per sub-resource in admin_api/, composed here into the one app.

Open when no admin token is set; else ``Authorization: Bearer <token>`` (enrollment and heartbeats use
``ISTHMUS_ENROLL_TOKEN`` instead): see the rules in isthmus.handlers.
"""

from __future__ import annotations

from isthmus import init_parts
from isthmus.observability import lambda_entry
from isthmus.web import create_app

if __package__:  # locally: functions.admin.routes
    from .admin_api import routes
else:  # on Lambda the function folder is the import root
    from admin_api import routes  # type: ignore[no-redef]

SERVICE = "admin"

app = create_app(routes, service=SERVICE)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_admin)

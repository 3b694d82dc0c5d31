"""`ideobatch serve`: a live web view of the ledger, for reviewing runs while and after they go.

One module per job: `app` (routes, running the server), `state` (what the
handlers share), `security` (token, local binding, read-only, headers),
`pages` (overview, gallery, detail, failures), `actions` (picks, retries),
`media` (images from the output folders only), `metrics` (Prometheus),
`cards` and `fields` (what a card shows and the filters, shared with the
static `gallery` file), `render` (Jinja2 templates and static files).
"""

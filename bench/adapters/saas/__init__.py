"""Adapters of third-party CRM platforms, reached over their public HTTP APIs.

    http        credentials, secret redaction, retries with jitter, client-side rate limits
    common      run tags, harness-id to vendor-id maps, URL parameters, capability tables
    salesforce  salesforce://   Salesforce REST API (OAuth 2.0 client credentials)
    fxiaoke     fxiaoke://      Fxiaoke (ShareCRM) open API
    ec          ec://           EC (WorkEC) open API v2
    wecom       wecom://        WeCom external contacts, the WeCom side of EC
    dabei       dabei://        Dabeicloud: no public API, so nothing is measured

Every module imports only httpx and the standard library, so registering the entry points
costs nothing until a target of that scheme is used.
"""

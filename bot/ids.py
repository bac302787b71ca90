"""Action ids, named once: the listeners register them, the blocks use them."""

LINK_PRODUCTION = "vcc_link_production"
LINK_SANDBOX = "vcc_link_sandbox"
LOGIN_OPEN = "vcc_login_open"
UNLINK_CONFIRM = "vcc_unlink_confirm"
UNLINK_CANCEL = "vcc_unlink_cancel"

LINK_ENVIRONMENTS = {LINK_PRODUCTION: "production", LINK_SANDBOX: "sandbox"}

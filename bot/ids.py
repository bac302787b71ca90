"""Action, view and block ids, named once: the listeners register them, the blocks use them."""

LINK_PRODUCTION = "vcc_link_production"
LINK_SANDBOX = "vcc_link_sandbox"
LINK_CUSTOM = "vcc_link_custom"
RELINK = "vcc_relink"
CHECK_NOW = "vcc_check_now"
LOGIN_OPEN = "vcc_login_open"
UNLINK_CONFIRM = "vcc_unlink_confirm"
UNLINK_CANCEL = "vcc_unlink_cancel"

CUSTOM_DOMAIN_VIEW = "vcc_custom_domain"
MY_DOMAIN_BLOCK = "vcc_my_domain"
MY_DOMAIN_INPUT = "vcc_my_domain_input"

LINK_ENVIRONMENTS = {LINK_PRODUCTION: "production", LINK_SANDBOX: "sandbox"}

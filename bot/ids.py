"""Action, view and block ids, named once: the listeners register them, the blocks use them."""

LINK_PRODUCTION = "vcc_link_production"
LINK_SANDBOX = "vcc_link_sandbox"
LINK_CUSTOM = "vcc_link_custom"
RELINK = "vcc_relink"
CHECK_NOW = "vcc_check_now"
LOGIN_OPEN = "vcc_login_open"
LOGIN_AGAIN = "vcc_login_again"  # "Send me a new link" on an ended login DM
UNLINK_CONFIRM = "vcc_unlink_confirm"
UNLINK_CANCEL = "vcc_unlink_cancel"

# The Home tab's buttons: a view has no response_url, so they are answered apart.
HOME_LINK = "vcc_home_link"
HOME_CHECK = "vcc_home_check"
HOME_UNLINK = "vcc_home_unlink"
HOME_PREVIOUS = "vcc_home_previous"
HOME_NEXT = "vcc_home_next"

CUSTOM_DOMAIN_VIEW = "vcc_custom_domain"
MY_DOMAIN_BLOCK = "vcc_my_domain"
MY_DOMAIN_INPUT = "vcc_my_domain_input"

LINK_ENVIRONMENTS = {LINK_PRODUCTION: "production", LINK_SANDBOX: "sandbox"}

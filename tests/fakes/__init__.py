"""The loopback fakes of Slack and Salesforce the tests use: bot.standins (shipped with the
package, for `vcc-bot demo` too), and a Socket Mode gateway for the tests alone."""

from bot.standins import *  # noqa: F403 - the same names, under the tests' usual import
from bot.standins import __all__ as __all__

"""A local HTTPS stand-in for a small Salesforce org (REST, SOQL/SOSL subsets, OAuth), with fault injection."""

from sandboxes.salesforce.sandbox import SalesforceSandbox
from sandboxes.salesforce.schema import DEFAULT_CUSTOM_FIELDS, CustomField

__all__ = ["DEFAULT_CUSTOM_FIELDS", "CustomField", "SalesforceSandbox"]

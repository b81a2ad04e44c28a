"""Where click-to-dial may call: the destination policy that keeps a click from becoming toll fraud.

Pure (no I/O, no settings read here): `DialPolicy.destination(number)` answers the number to dial, or raises
`DialRefused` with a reason written for the agent, who sees it in Flex ("calls to premium-rate numbers are not
allowed"). The gateway answers it as 422 (`POST /agent/click-to-dial`).

What is refused, and why (libphonenumber's classification, which `phonenumberslite` carries in full: the lite
package drops only the geocoder, carrier and time-zone data):

- Numbers outside the allowed countries (`FLEXSF_DIAL_ALLOWED_COUNTRIES`, default the country of
  `FLEXSF_DEFAULT_REGION`). The country is the number's own, not its calling code: +1 876 is Jamaica, not the US, so
  the Caribbean's +1 area codes (the "one-ring" scams) are refused with a US default.
- Numbers of no country (+800, +808, +870, +881, +882, +883, +979 …): satellite phones (Inmarsat +870, the +881
  systems) and international networks cost many times a call anywhere and are the classic destinations of
  international revenue-share fraud; no ISO country can allow them.
- Premium rate (the caller pays a rate the number's holder shares: the payout of toll fraud; +1 900, UK 09 and 084),
  shared cost (the caller pays part of the holder's cost, often with a revenue share: Spain 901/902, Germany 0180),
  UAN (a company's single "universal access" number, in several plans charged above a normal call with a share to
  the holder: UK 055, Portugal 707), personal numbers (UK 070, North America's 5XX "follow-me" numbers: rates up to
  premium and a known fraud vehicle), pagers and voicemail access (no customer answers there). A customer record
  holds a person's own line, so refusing these costs the agent nothing real: they can still dial by hand, under
  Twilio's own geographic permissions.
- What is not a valid number: unknown ranges, wrong lengths.
- Short codes (`611`, `22222`), unless `FLEXSF_DIAL_ALLOW_SHORT_CODES`; even then not premium-rate ones. Emergency
  numbers are never dialed from a click on a record: an emergency call is placed on purpose, from the dialpad.

Allowed: fixed lines, mobiles, both (North America cannot tell them apart), toll free and VoIP, in an allowed country.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo
from phonenumbers.shortnumberinfo import ShortNumberCost

# The number types refused, with the words the agent reads ("calls to <words> are not allowed").
REFUSED_TYPES: dict[int, str] = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate numbers",
    PhoneNumberType.SHARED_COST: "shared-cost numbers",
    PhoneNumberType.UAN: "universal access (UAN) numbers",
    PhoneNumberType.PERSONAL_NUMBER: "personal (follow-me) numbers",
    PhoneNumberType.PAGER: "pagers",
    PhoneNumberType.VOICEMAIL: "voicemail access numbers",
}
ALLOWED_TYPES = frozenset(
    {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.VOIP,
    }
)
# Calling codes of satellite systems (Inmarsat; the Global Mobile Satellite System: Iridium, Globalstar, Thuraya …).
SATELLITE_CODES = frozenset({870, 881})
NON_GEOGRAPHIC = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY  # "001": the region of +800, +881 …
SUPPORTED_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


class DialRefused(ValueError):
    """The number may not be dialed; `reason` is for the agent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def region_codes(values: Iterable[str]) -> list[str]:
    """ISO 3166 region codes as libphonenumber knows them, upper-cased, each once, in order; ValueError names one that
    is not (`UK` is `GB`; `001`, the non-geographic numbers, is no country)."""
    codes: list[str] = []
    for value in values:
        code = value.strip().upper()
        if code not in SUPPORTED_REGIONS:
            raise ValueError(f"{value.strip()!r} is not an ISO 3166 region code (e.g. US, CA, GB)")
        if code not in codes:
            codes.append(code)
    return codes


@dataclass(frozen=True)
class DialPolicy:
    """Where click-to-dial may call. `default_region` reads numbers written without a country code (and is the one
    country allowed when `allowed_countries` is empty)."""

    default_region: str = "US"
    allowed_countries: frozenset[str] = frozenset()
    allow_short_codes: bool = False

    @classmethod
    def from_settings(cls, settings) -> DialPolicy:
        region = settings.flexsf_default_region.strip().upper()
        return cls(
            default_region=region,
            allowed_countries=frozenset(settings.flexsf_dial_allowed_countries or [region]),
            allow_short_codes=settings.flexsf_dial_allow_short_codes,
        )

    @property
    def countries(self) -> frozenset[str]:
        return self.allowed_countries or frozenset({self.default_region.upper()})

    def destination(self, number: str) -> str:
        """The number to dial: E.164, or a short code's digits. `DialRefused` says why not."""
        region = self.default_region.upper()
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            raise DialRefused("the number is not a valid phone number") from None
        if not phonenumbers.is_valid_number(parsed):
            return self._short_code(number, parsed, region)

        kind = phonenumbers.number_type(parsed)
        if kind in REFUSED_TYPES:
            raise DialRefused(f"calls to {REFUSED_TYPES[kind]} are not allowed")
        country = phonenumbers.region_code_for_number(parsed)
        if country in (NON_GEOGRAPHIC, phonenumbers.UNKNOWN_REGION, None):
            code = parsed.country_code
            what = "satellite numbers" if code in SATELLITE_CODES else "international non-geographic numbers"
            raise DialRefused(f"calls to {what} (+{code}) are not allowed")
        if kind not in ALLOWED_TYPES:  # a type libphonenumber adds later: refused until someone decides
            raise DialRefused("calls to this kind of number are not allowed")
        if country not in self.countries:
            allowed = ", ".join(sorted(self.countries))
            raise DialRefused(f"calls to numbers in {country} are not allowed (click-to-dial calls {allowed})")
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    def _short_code(self, number: str, parsed: phonenumbers.PhoneNumber, region: str) -> str:
        if shortnumberinfo.is_emergency_number(number, region):
            raise DialRefused("emergency numbers are not dialed from a record: use the dialpad")
        if not shortnumberinfo.is_valid_short_number_for_region(parsed, region):
            raise DialRefused("the number is not a valid phone number")
        if not self.allow_short_codes:
            raise DialRefused("calls to short codes are not allowed")
        if shortnumberinfo.expected_cost_for_region(parsed, region) == ShortNumberCost.PREMIUM_RATE:
            raise DialRefused("calls to premium-rate short codes are not allowed")
        return phonenumbers.national_significant_number(parsed)

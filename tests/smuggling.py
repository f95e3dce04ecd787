"""The end-of-data lookalikes from SEC Consult's SMTP smuggling research (Dec 2023) and the
follow-ups (aiosmtpd CVE-2024-27305, Postfix/Sendmail/Exim advisories), shared by the unit
and the wire-level tests."""

# Variants built from bare CR and LF: spamgate must never end DATA on them.
BARE_NEWLINE_VARIANTS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "crlf_dot_cr": b"\r\n.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "lf_dot_cr": b"\n.\r",
    "cr_dot_lf": b"\r.\n",
}
# ... and every variant, including a NUL before the dot.
ALL_VARIANTS = {**BARE_NEWLINE_VARIANTS, "crlf_nul_dot_crlf": b"\r\n\x00.\r\n"}

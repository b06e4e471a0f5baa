@pci-req-8
Feature: PCI DSS 8.3 — strong authentication, lockout and throttling
  Every API call needs a valid key; failures do not reveal the key; repeated failures from a
  client are locked out, and each key is rate limited.

  @pci-8.3.1
  Scenario: Calls without a valid key are refused without echoing the key
    Given a merchant with a secret key
    When a client calls the API without a key
    Then the API answers 401
    When a client calls the API with the wrong secret key "sk_test_pcicheckWrongKey1234567890abcd"
    Then the API answers 401
    And the error does not echo the key "sk_test_pcicheckWrongKey1234567890abcd"

  @pci-8.3.4
  Scenario: Repeated authentication failures lock the client out
    Given the system locks a client out after 5 failed authentications
    And a merchant with a secret key
    When a client presents a wrong secret key 30 times
    Then the client is locked out before the last attempt
    And the merchant's valid key still works

  @pci-8.3.4
  Scenario: A burst of requests on one key is throttled
    Given the system limits each API key to a burst of 20 requests
    And a merchant with a secret key
    When the merchant sends up to 2000 requests as fast as possible
    Then the merchant is throttled with a Retry-After header

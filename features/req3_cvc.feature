@pci-req-3
Feature: PCI DSS 3.3.1 — the card verification code is not retained after authorization
  The CVC is held only in the tokenizer's memory until the first authorization (or a short
  time-to-live) and is never written to any store, log or API response.

  @pci-3.3.1 @needs-db @needs-logs
  Scenario: The CVC is used for the first authorization and then forgotten everywhere
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    When the merchant charges 2000 USD to the card
    Then the payment succeeds
    And the CVC check on the payment was "pass"
    When the merchant charges 1000 USD to the card
    Then the payment succeeds
    And no CVC was available to check on the payment
    When the merchant reads back the payment, its charge, the card and the list of cards
    Then no stored record contains the CVC
    And no log line contains the CVC
    And no API response contained the CVC

  @pci-3.3.1 @needs-db
  Scenario: A declined card's CVC is not stored either
    Given a merchant with a secret key
    And the merchant tokenizes the card "4000000000000002" with CVC "913"
    When the merchant charges 1000 USD to the card
    And the merchant reads back the payment, its charge, the card and the list of cards
    Then no stored record contains the CVC
    And no API response contained the CVC

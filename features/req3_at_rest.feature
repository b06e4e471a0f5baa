@pci-req-3
Feature: PCI DSS 3.5.1 — the PAN is unreadable wherever it is stored
  The vault keeps each card number encrypted with AES-256-GCM under a data key; the card
  fingerprint used for de-duplication is a keyed HMAC computed inside the HSM.

  @pci-3.5.1 @needs-db
  Scenario: Stored card numbers are ciphertext with a keyed fingerprint
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    And the merchant tokenizes the card "5555555555554444" with CVC "212"
    When the merchant charges 3100 USD to the card
    Then no stored record contains the card number
    And the vault holds every card number only as ciphertext
    And the same card always has the same fingerprint and different cards different ones
    And the fingerprint is a keyed hash, not a plain hash of the card number

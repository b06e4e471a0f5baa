@pci-req-3
Feature: PCI DSS 3.4.1 — the PAN is masked when displayed
  Outside the cardholder data environment the card number is shown at most as its BIN and
  last four digits: in every API response, error messages included, and in every log line.

  @pci-3.4.1 @needs-logs
  Scenario: Card numbers are masked in every API response and log line
    Given a merchant with a secret key
    And the merchant tokenizes the card "4242424242424242" with CVC "739"
    And the merchant tokenizes the card "5555555555554444" with CVC "212"
    When the merchant charges 2500 USD to the card
    And the merchant refunds the payment
    And the merchant reads back the payment, its charge, the card and the list of cards
    And the merchant submits the card "4000056655665556" with an invalid expiry month
    Then every API response shows the card only as BIN and last four
    And no log line contains the card number

  @pci-3.4.1
  Scenario Outline: Masking holds for every card brand
    Given a merchant with a secret key
    And the merchant tokenizes the card "<number>" with CVC "<cvc>"
    When the merchant charges 1000 USD to the card
    And the merchant reads back the payment, its charge, the card and the list of cards
    Then every API response shows the card only as BIN and last four

    Examples:
      | number           | cvc  |
      | 4242424242424242 | 123  |
      | 5555555555554444 | 123  |
      | 378282246310005  | 1234 |
      | 6011111111111117 | 123  |

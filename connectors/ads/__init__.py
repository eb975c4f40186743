"""Ad-platform custom audiences: Tencent Ads, Ocean Engine, Baidu, Meta and Google Customer Match.
See connectors/ads/common.py for what they share and each module for its platform's contract."""
